from kaiwa.bench.reference.worker import main

main()
