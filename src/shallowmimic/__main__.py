from shallowmimic.cli.main import main

main()
