"""``python -m lit_models`` is ``lit-models``; so is each process of ``torchrun ... -m lit_models fit ...``
(:mod:`lit_models.torchrun`)."""

from lit_models.commands import main

main()
