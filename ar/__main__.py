from ar.cli import main

main()
