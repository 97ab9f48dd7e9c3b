"""The host's prompt comments: a '#' starts a comment that runs to the end of its line."""

import re


def strip_comments(text):
    text = re.sub(r"(?m)^#[^\n]*(\n|$)", "\n", text)
    return re.sub(r"#[^\n]*(\n|$)", "\n", text)
