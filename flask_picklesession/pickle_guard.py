"""Find pickles that would change a global while they load.

An allowlist limits the globals a pickle may name, but not what it does
with them: BUILD sets attributes on whatever object is below its state, so
a pickle naming only an allowed class can give that class new attributes
(``Markup.escape``, say) for the rest of the process. SETITEM(S),
APPEND(S) and ADDITEMS likewise call methods of the object they fill.
This package never writes such a pickle; someone holding the secret key
and write access to the store could, and that is who the allowlist is for.

The check walks the opcodes with :mod:`pickletools`, tracking which stack
items are globals (and memo entries holding them), without running
anything. It costs about as much as a pure-Python unpickler, so it runs
only under an allowlist, once per distinct value.
"""

from __future__ import annotations

import pickletools

_GLOBAL = "global"
_OTHER = "other"
_MARK = "mark"

#: Opcodes that push a global (the EXT ones name one through copyreg).
_PUSH_GLOBAL = frozenset({"GLOBAL", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"})
#: Opcodes that change an object, by its depth on the stack before they run.
_CHANGE_AT = {"BUILD": 2, "APPEND": 2, "SETITEM": 3}
#: Opcodes that change the object just below their mark.
_CHANGE_BELOW_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})


class UnsafePickle(ValueError):
    """The pickle would change a global, or is too malformed to tell."""


def check_no_global_changed(body: bytes) -> None:
    """Raise :class:`UnsafePickle` if loading ``body`` would change a global."""
    stack: list[str] = []
    memo: dict[object, str] = {}
    try:
        for opcode, arg, _ in pickletools.genops(body):
            _step(opcode, arg, stack, memo)
    except UnsafePickle:
        raise
    except Exception as exc:  # malformed: genops or the stack ran out
        raise UnsafePickle(f"unreadable pickle ({exc})") from None


def _step(
    opcode: pickletools.OpcodeInfo,
    arg: object,
    stack: list[str],
    memo: dict[object, str],
) -> None:
    """Apply one opcode to the stack of item kinds."""
    name = opcode.name
    if name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in _MEMO_PUT:
        memo[arg] = stack[-1]
    elif name in _MEMO_GET:
        stack.append(memo.get(arg, _OTHER))
    elif name == "DUP":
        stack.append(stack[-1])
    else:
        _pop(name, opcode.stack_before, stack)
        for item in opcode.stack_after:
            if item is pickletools.markobject:
                stack.append(_MARK)
            else:
                stack.append(_GLOBAL if name in _PUSH_GLOBAL else _OTHER)


def _pop(name: str, before: list[pickletools.StackObject], stack: list[str]) -> None:
    """Take what ``name`` consumes off the stack, refusing a change to a global."""
    if pickletools.markobject in before:
        mark = len(stack) - 1 - stack[::-1].index(_MARK)
        start = mark - before.index(pickletools.markobject)
        if start < 0:
            raise UnsafePickle("stack underflow")
        if name in _CHANGE_BELOW_MARK and stack[start] == _GLOBAL:
            raise UnsafePickle(f"{name} would change a global as it loads")
        del stack[start:]
    elif name == "POP" and stack[-1] == _MARK:
        stack.pop()
    elif before:
        if len(stack) < len(before):
            raise UnsafePickle("stack underflow")
        depth = _CHANGE_AT.get(name)
        if depth is not None and stack[-depth] == _GLOBAL:
            raise UnsafePickle(f"{name} would change a global as it loads")
        del stack[-len(before) :]
