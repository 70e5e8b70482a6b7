from agents.worker import main

main()
