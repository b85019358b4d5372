from tabreg.cli import main

main()
