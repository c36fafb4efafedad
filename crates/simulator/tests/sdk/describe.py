"""Calls a CompShare gateway through UCloud's official Python SDK and prints what came back.

usage: describe.py BASE_URL PUBLIC_KEY PRIVATE_KEY ACTION PARAMS_JSON

Prints one JSON object on stdout: {"response": {...}} when the call succeeds, or
{"error": {"type": "RetCodeException", "code": n, "message": "..."}} when the SDK raises. The
simulator's SDK compatibility test (tests/simulator.rs) compares it with the project's own client.
"""

import json
import sys

from ucloud.client import Client
from ucloud.core import exc


def main() -> None:
    base_url, public_key, private_key, action, params = sys.argv[1:6]
    client = Client(
        {
            "region": "cn-wlcb",
            "public_key": public_key,
            "private_key": private_key,
            "base_url": base_url,
        }
    )
    try:
        response = client.ucompshare().invoke(action, json.loads(params))
    except exc.RetCodeException as e:
        print(json.dumps({"error": {"type": type(e).__name__, "code": e.code, "message": e.message}}))
        return
    print(json.dumps({"response": response}))


if __name__ == "__main__":
    main()
