#!/usr/bin/env python3
"""Checks that `hack/quickstart.sh` prints the table the README shows.

Reads the quick start's output on stdin. Ages and the id of the machine the operator creates
differ on every run; everything else must be as the README says.
"""
import re
import sys


def rows(text):
    normalized = []
    for line in text.splitlines():
        line = re.sub(r"\s\d+s(\s)", r" AGE\1", line)
        line = re.sub(r"uhost-[0-9a-f]{8}(\s+\S+\s+trainer\s)", r"uhost-NEW\1", line)
        normalized.append(line.split())
    return normalized


readme = open("README.md", encoding="utf-8").read()
table = re.search(r"```\n(NAME .*?)```", readme, re.S)
if not table:
    sys.exit("the README has no quick start table")
expected = rows(table.group(1))
printed = sys.stdin.read()
start = printed.find("NAME ")
if start < 0:
    sys.exit("the quick start printed no table:\n" + printed)
got = rows(printed[start:].strip())
if got != expected:
    sys.exit(
        "the quick start printed:\n" + printed[start:] + "\nthe README shows:\n" + table.group(1)
    )
print(f"the quick start printed the README's table ({len(expected) - 1} resources)")
