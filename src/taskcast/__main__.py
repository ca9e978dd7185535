from taskcast.cli import main

main()
