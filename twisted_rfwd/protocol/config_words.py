"""
The words of one line of an OpenSSH configuration file, as OpenSSH's C{argv_split} reads them:
blanks separate words, double or single quotes group them, a backslash escapes a quote, a
backslash or (outside quotes) a blank, and C{#} ends the line.  Both ssh_config and
sshd_config use it.  Pure.
"""

from __future__ import annotations

__all__ = ["split_words"]


def split_words(text: str) -> list[str]:
    """
    The words of C{text}.

    @raise ValueError: a quote is not closed.
    """
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        quote = ""
        arg: list[str] = []
        while i < n:
            c = text[i]
            if (
                c == "\\"
                and i + 1 < n
                and (text[i + 1] in "'\"\\" or (not quote and text[i + 1] == " "))
            ):
                arg.append(text[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "'\"":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                arg.append(c)
            i += 1
        if quote:
            raise ValueError("invalid quotes")
        args.append("".join(arg))
    return args
