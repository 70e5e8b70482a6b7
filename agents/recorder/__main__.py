from agents.recorder.service import main

main()
