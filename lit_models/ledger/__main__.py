"""``python -m lit_models.ledger``: print docs/fidelity.md; ``python -m lit_models.ledger check``: list every ledger
binding that does not hold and every recipe comment that claims what is not so (exit status 1 if any)."""

from __future__ import annotations

import sys

from lit_models.ledger.check import problems
from lit_models.ledger.page import page


def main(argv: list[str]) -> int:
    if argv == ["check"]:
        found = problems()
        print("\n".join(found) if found else "Every ledger binding holds and no recipe comment contradicts them.")
        return 1 if found else 0
    if argv:
        print("usage: python -m lit_models.ledger [check]", file=sys.stderr)
        return 2
    print(page(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
