"""A reader for the small part of POSIX shell that a LUMI-style `build-*.sh` is made of.

We never run a user's build script to learn what it does (it could do anything); we read it,
and we only accept what we can reproduce exactly. This module turns the script's text into
commands made of words and operators, with each word kept as its quoted and unquoted parts, so
the caller can expand variables itself and refuse whatever bash would treat differently from us
(command substitution, globbing, word splitting of an unquoted value, here-documents, ...).

Anything outside that subset raises `ShellSyntaxError` with the line it starts on; the caller
reports it as a construct it cannot translate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Characters that end an unquoted word (besides whitespace) and start an operator.
_OPERATOR_CHARS = "|&;<>()"
_SPECIAL_PARAMETERS = "@*#?-$!0123456789"
_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_NAME_CHARS = _NAME_START + "0123456789"


class ShellSyntaxError(Exception):
    """A construct outside the subset we translate; `line` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Part:
    """A piece of a word: literal text, or a variable reference (`$NAME` / `${NAME}`)."""

    text: str
    variable: bool
    quoted: bool


@dataclass
class Word:
    """One shell word, as the parts it was written with."""

    parts: list[Part] = field(default_factory=list)
    line: int = 0

    @property
    def literal(self) -> str | None:
        """The word's text when it references no variable, else None."""
        if any(part.variable for part in self.parts):
            return None
        return "".join(part.text for part in self.parts)

    def is_variable(self, name: str) -> bool:
        """True when the word is exactly one reference to `name` (quoted or not): `$NAME`, `"${NAME}"`."""
        parts = [part for part in self.parts if part.variable or part.text]
        return len(parts) == 1 and parts[0].variable and parts[0].text == name

    def assignment(self) -> tuple[str, Word] | None:
        """`NAME=value` written as one word with an unquoted `NAME=` start: the name and the value word."""
        if not self.parts or self.parts[0].quoted or self.parts[0].variable:
            return None
        head = self.parts[0].text
        name, sep, rest = head.partition("=")
        if not sep or not name or name[0] not in _NAME_START or any(ch not in _NAME_CHARS for ch in name):
            return None
        value = Word(parts=([Part(rest, False, False)] if rest else []) + self.parts[1:], line=self.line)
        return name, value


@dataclass(frozen=True)
class Operator:
    """`|`, `|&`, `>`, `>>`, `<`, `;`, `&&`, ... ; `fd` is the number written before a redirection (`2>&1`)."""

    text: str
    line: int
    fd: str = ""


Token = Word | Operator


@dataclass
class Command:
    """The tokens of one line of the script (after joining `\\`-continued lines)."""

    line: int
    end_line: int
    tokens: list[Token]

    @property
    def words(self) -> list[Word]:
        return [token for token in self.tokens if isinstance(token, Word)]


def commands(text: str) -> tuple[list[Command], list[ShellSyntaxError]]:
    """Split a script into its commands (one per logical line), dropping comments and blank lines.

    A construct we do not read ends its command: the error is kept, the rest of that logical line
    is skipped, and reading goes on, so one pass reports every line that cannot be translated.
    """
    errors: list[ShellSyntaxError] = []
    lexer = _Lexer(text)
    while True:
        try:
            lexer.run()
            return lexer.done, errors
        except ShellSyntaxError as exc:
            errors.append(exc)
            lexer.skip_logical_line()


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1
        self.done: list[Command] = []

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def advance(self) -> str:
        if self.pos >= len(self.text):
            raise ShellSyntaxError(self.line, "the script ends in the middle of a command")
        char = self.text[self.pos]
        self.pos += 1
        if char == "\n":
            self.line += 1
        return char

    def skip_logical_line(self) -> None:
        """Move past the rest of the current line and the lines it continues onto with a backslash."""
        while self.pos < len(self.text):
            char = self.advance()
            if char == "\\" and self.peek() == "\n":
                self.advance()
            elif char == "\n":
                return

    def run(self) -> None:
        out = self.done
        tokens: list[Token] = []
        start = self.line
        while self.pos < len(self.text):
            char = self.peek()
            if char == "\n":
                self.advance()
                if tokens:
                    out.append(Command(line=start, end_line=self.line - 1, tokens=tokens))
                tokens = []
                start = self.line
                continue
            if char in " \t":
                self.advance()
                continue
            if char == "\\" and self.peek(1) == "\n":  # line continuation between words
                self.advance()
                self.advance()
                continue
            if not tokens:
                start = self.line
            if char == "#":  # a comment runs to the end of the line; a trailing backslash does not continue it
                while self.pos < len(self.text) and self.peek() != "\n":
                    self.advance()
                continue
            if char in _OPERATOR_CHARS:
                tokens.append(self.operator(""))
                continue
            word = self.word()
            redirection = self.peek() != "" and self.peek() in "<>"
            if redirection and word.literal is not None and word.literal.isdigit() and len(word.parts) == 1 \
                    and not word.parts[0].quoted:
                tokens.append(self.operator(word.literal))  # `2>&1`: the digits belong to the redirection
                continue
            tokens.append(word)
        if tokens:
            out.append(Command(line=start, end_line=self.line, tokens=tokens))

    def operator(self, fd: str) -> Operator:
        line = self.line
        first = self.advance()
        two = first + self.peek()
        if first == "<" and self.peek() == "<":
            raise ShellSyntaxError(line, "a here-document (<<) is not translated")
        if first in "()":
            raise ShellSyntaxError(line, "a subshell or group ( ... ) is not translated")
        if two in (">>", ">&", "|&", "&&", "||", ";;", "&>"):
            self.advance()
            return Operator(two, line, fd)
        return Operator(first, line, fd)

    def word(self) -> Word:
        word = Word(line=self.line)
        literal: list[str] = []

        def flush(quoted: bool) -> None:
            if literal:
                word.parts.append(Part("".join(literal), False, quoted))
                literal.clear()

        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t\n" or char in _OPERATOR_CHARS:
                break
            if char == "\\":
                if self.peek(1) == "\n":
                    self.advance()
                    self.advance()
                    continue
                if self.peek(1) == "":
                    raise ShellSyntaxError(self.line, "the script ends in a lone backslash")
                self.advance()
                flush(False)
                literal.append(self.advance())
                flush(True)  # an escaped character is never split or globbed
                continue
            if char == "'":
                flush(False)
                self.single_quoted(word)
                continue
            if char == '"':
                flush(False)
                self.double_quoted(word)
                continue
            if char == "$":
                flush(False)
                self.expansion(word, quoted=False)
                continue
            if char == "`":
                raise ShellSyntaxError(self.line, "command substitution (`...`) is not translated")
            if char in "*?[":
                raise ShellSyntaxError(self.line, f"an unquoted '{char}' would be expanded as a file name pattern")
            if char == "~" and not literal and not word.parts:
                raise ShellSyntaxError(self.line, "an unquoted '~' would be expanded to a home folder")
            if char in "{}":
                raise ShellSyntaxError(self.line,
                                       f"an unquoted '{char}' (brace expansion or a group) is not translated")
            if char == "!" and not literal and not word.parts:
                raise ShellSyntaxError(self.line, "'!' (negation) is not translated")
            literal.append(self.advance())
        flush(False)
        return word

    def single_quoted(self, word: Word) -> None:
        line = self.line
        self.advance()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise ShellSyntaxError(line, "a single quote is never closed")
        text = self.text[self.pos:end]
        while self.pos <= end:
            self.advance()
        word.parts.append(Part(text, False, True))

    def double_quoted(self, word: Word) -> None:
        line = self.line
        self.advance()
        literal: list[str] = []
        before = len(word.parts)

        def flush() -> None:
            if literal:
                word.parts.append(Part("".join(literal), False, True))
                literal.clear()

        while True:
            if self.pos >= len(self.text):
                raise ShellSyntaxError(line, "a double quote is never closed")
            char = self.peek()
            if char == '"':
                self.advance()
                break
            if char == "\\":
                following = self.peek(1)
                if following == "\n":
                    self.advance()
                    self.advance()
                    continue
                if following in ('"', "\\", "$", "`"):
                    self.advance()
                    literal.append(self.advance())
                    continue
                literal.append(self.advance())
                continue
            if char == "$":
                flush()
                self.expansion(word, quoted=True)
                continue
            if char == "`":
                raise ShellSyntaxError(self.line, "command substitution (`...`) is not translated")
            literal.append(self.advance())
        flush()
        if len(word.parts) == before:
            word.parts.append(Part("", False, True))  # `""` is an empty word, not no word

    def expansion(self, word: Word, *, quoted: bool) -> None:
        line = self.line
        self.advance()  # the $
        char = self.peek()
        if char == "(":
            kind = "arithmetic expansion $((...))" if self.peek(1) == "(" else "command substitution $(...)"
            raise ShellSyntaxError(line, f"{kind} is not translated")
        if char == "'":
            raise ShellSyntaxError(line, "ANSI-C quoting $'...' is not translated")
        if char == '"':
            raise ShellSyntaxError(line, "locale quoting $\"...\" is not translated")
        if char == "{":
            end = self.text.find("}", self.pos)
            inner = self.text[self.pos + 1:end] if end >= 0 else ""
            if end < 0 or not inner or inner[0] not in _NAME_START or any(ch not in _NAME_CHARS for ch in inner):
                raise ShellSyntaxError(line, "only ${NAME} is translated, not other parameter expansions")
            while self.pos <= end:
                self.advance()
            word.parts.append(Part(inner, True, quoted))
            return
        if char and char in _SPECIAL_PARAMETERS:
            raise ShellSyntaxError(line, f"the special parameter ${char} depends on how the script is called")
        if not char or char not in _NAME_START:
            word.parts.append(Part("$", False, quoted))  # a lone $ is literal
            return
        name = []
        while self.peek() and self.peek() in _NAME_CHARS:
            name.append(self.advance())
        word.parts.append(Part("".join(name), True, quoted))
