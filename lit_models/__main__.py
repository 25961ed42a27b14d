from lit_models.cli import main

main()
