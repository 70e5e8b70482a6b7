from agents.watchdog.service import main

main()
