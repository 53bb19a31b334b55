from localpay.cli import main

main()
