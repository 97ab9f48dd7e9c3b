"""The host's extra-network tags (<lora:name:1.0>) are removed from a prompt before encoding."""

import re
from collections import defaultdict

TAG = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    def __init__(self, items):
        self.items = items


def parse_prompt(prompt):
    found = defaultdict(list)

    def take(m):
        found[m.group(1)].append(ExtraNetworkParams(m.group(2).split(":")))
        return ""

    return TAG.sub(take, prompt), found
