from lit_models.commands import main

main()
