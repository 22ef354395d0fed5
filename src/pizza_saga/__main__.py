from pizza_saga.cli import main

main()
