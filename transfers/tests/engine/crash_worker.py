"""A transfer run in a child process, so that a test can kill it at a fault point.

Usage: python -m transfers.tests.engine.crash_worker SOURCE DESTINATION AMOUNT [IDEMPOTENCY_KEY]
with BANKCORE_FAULT_AT=<fault point>. Exits 86 at the fault point, 0 after a normal finish,
3 on a refusal (printing its code).
"""

import sys

import django


def main() -> int:
    django.setup()
    from bankcore.actors import Actor, Channel
    from bankcore.errors import ApplicationError
    from transfers.services import transfer_create

    source, destination, amount, *rest = sys.argv[1:]
    try:
        transfer = transfer_create(
            actor=Actor.system(Channel.COMMAND, "crash-worker"),
            source_account=source,
            destination_account=destination,
            amount=amount,
            idempotency_key=rest[0] if rest else None,
        )
    except ApplicationError as error:
        print(error.code)
        return 3
    print(transfer.id, transfer.status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
