"""Calls a CompShare gateway through UCloud's official Python SDK and prints what came back.

usage: describe.py BASE_URL PUBLIC_KEY PRIVATE_KEY ACTION PARAMS_JSON [PROJECT_ID]

ACTION is either an API action (`DescribeCompShareInstance`, `CreateCompShareInstance`, ...),
sent with `client.ucompshare().invoke(ACTION, PARAMS)` as the vendor's pages show, or the name of
one of the SDK's typed methods (`stop_comp_share_instance`, ...), called with PARAMS. The client's
region is cn-wlcb; PROJECT_ID, when given, is its project (the typed scheduler methods require
one). The SDK's automatic retries are off (`max_retries: 0`), so that one run is one call: by
default it repeats a call that failed with a RetCode above 2000 three times, at once.

Prints one JSON object on stdout: {"response": {...}} when the call succeeds, or
{"error": {"type": "RetCodeException", "code": n, "message": "..."}} when the SDK raises (for the
SDK's own parameter checks, {"error": {"type": "ValidationException", "message": "..."}}). The
simulator's SDK compatibility test (tests/sdk.rs) compares it with the project's own client.
"""

import json
import sys

from ucloud.client import Client
from ucloud.core import exc


def main() -> None:
    base_url, public_key, private_key, action, params = sys.argv[1:6]
    config = {
        "region": "cn-wlcb",
        "public_key": public_key,
        "private_key": private_key,
        "base_url": base_url,
        "max_retries": 0,
    }
    if len(sys.argv) > 6:
        config["project_id"] = sys.argv[6]
    service = Client(config).ucompshare()
    params = json.loads(params)
    try:
        if action[:1].islower():
            response = getattr(service, action)(params)
        else:
            response = service.invoke(action, params)
    except exc.RetCodeException as e:
        print(json.dumps({"error": {"type": type(e).__name__, "code": e.code, "message": e.message}}))
        return
    except exc.ValidationException as e:
        print(json.dumps({"error": {"type": type(e).__name__, "message": str(e)}}))
        return
    print(json.dumps({"response": response}))


if __name__ == "__main__":
    main()
