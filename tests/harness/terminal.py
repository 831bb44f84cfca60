"""What a person sees in a terminal after some output: the lines left on the screen and in
the scrollback, after the cursor movements and erasures that a live progress bar makes."""

from __future__ import annotations

import re

#: The escape sequences a terminal acts on (CSI ...), and the rest of the text.
_TOKENS = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])|\x1b\][^\x07]*\x07|([^\x1b]+)|(\x1b)")


def screen_lines(output: str) -> list[str]:
    """The lines of ``output`` as a terminal shows them in the end (trailing blanks cut).

    >>> screen_lines("bar 1/10\\r\\x1b[2Kbar 2/10\\r\\x1b[2Klog line\\nbar 2/10\\r\\x1b[2K")
    ['log line']
    >>> screen_lines("bar 1/10log line\\n")  # a log written onto the bar's line
    ['bar 1/10log line']
    """
    lines: list[list[str]] = [[]]
    row = col = 0

    def put(char: str) -> None:
        nonlocal col
        line = lines[row]
        line.extend(" " * (col - len(line) + 1))
        line[col] = char
        col += 1

    for match in _TOKENS.finditer(output):
        params, command, text, lone = match.group(1), match.group(2), match.group(3), match.group(4)
        if text is not None:
            for char in text:
                if char == "\n":
                    row += 1
                    col = 0
                    while len(lines) <= row:
                        lines.append([])
                elif char == "\r":
                    col = 0
                elif char in "\x07\x08":
                    col = max(0, col - 1) if char == "\x08" else col
                else:
                    put(char)
        elif command is not None:
            count = int(params) if params.isdigit() else 1
            if command == "A":
                row = max(0, row - count)
            elif command == "B":
                row += count
                while len(lines) <= row:
                    lines.append([])
            elif command == "C":
                col += count
            elif command == "D":
                col = max(0, col - count)
            elif command == "G":
                col = count - 1
            elif command == "K":
                line = lines[row]
                if params in ("", "0"):
                    del line[col:]
                elif params == "1":
                    line[: col + 1] = [" "] * min(len(line), col + 1)
                else:
                    line.clear()
            elif command == "J" and params in ("", "0"):
                del lines[row][col:]
                del lines[row + 1 :]
            # m (colours), h / l (cursor shown / hidden) and the rest change no text
        del lone
    text_lines = ["".join(line).rstrip() for line in lines]
    while text_lines and not text_lines[-1]:
        text_lines.pop()
    return text_lines
