from terminal.cli import main

main()
