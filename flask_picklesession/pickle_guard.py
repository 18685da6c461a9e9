"""Find pickles that would change a shared object while they load.

An allowlist limits the globals a pickle may name, but not what it does
with them: BUILD sets attributes on whatever object is below its state, so
a pickle naming only an allowed class can give that class new attributes
(``Markup.escape``, say) for the rest of the process. SETITEM(S),
APPEND(S) and ADDITEMS likewise call methods of the object they fill. The
same holds for what calling an Enum returns: its members exist already,
shared by every request. This package never writes such a pickle; someone
holding the secret key and write access to the store could, and that is
who the allowlist is for.

The check walks the opcodes with :mod:`pickletools`, tracking which stack
items (and memo entries) are such shared objects, without running anything
but the imports the unpickler would make. It costs about as much as a
pure-Python unpickler, so it runs only under an allowlist, once per
distinct value.
"""

from __future__ import annotations

import enum
import pickletools
import typing as t

#: ``(kind, value)``: kind is "mark", "fresh" (built by this pickle),
#: "shared", "global" (value: the object) or "str" (value: the text).
_Item = tuple[str, object]
_MARK: _Item = ("mark", None)
_FRESH: _Item = ("fresh", None)
_SHARED: _Item = ("shared", None)

#: Opcodes that change an object, by its depth on the stack before they run.
_CHANGE_AT = {"BUILD": 2, "APPEND": 2, "SETITEM": 3}
#: Opcodes that change the object just below their mark.
_CHANGE_BELOW_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
#: Opcodes that call or instantiate, by the depth of what they call.
_CALL_AT = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3}
_TEXT = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})

Resolver = t.Callable[[str, str], object]


class UnsafePickle(ValueError):
    """The pickle would change a shared object, or is too odd to tell."""


def check_no_shared_object_changed(body: bytes, resolve: Resolver) -> None:
    """Raise :class:`UnsafePickle` if loading ``body`` would change a shared
    object. ``resolve(module, name)`` is the unpickler's ``find_class``."""
    walk = _Walk(resolve)
    try:
        for opcode, arg, _ in pickletools.genops(body):
            walk.step(opcode, arg)
    except _NotResolved as failed:
        raise failed.error from None
    except UnsafePickle:
        raise
    except Exception as exc:  # malformed: the stack ran out, an unknown opcode
        raise UnsafePickle(f"unreadable pickle ({exc})") from None


class _NotResolved(Exception):
    """Carries what ``resolve`` raised (a name the allowlist refuses, a class
    gone) out of the walk, to be raised as the unpickler would have."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _Walk:
    """The unpickler's stack and memo, holding kinds of objects, not objects."""

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self.stack: list[_Item] = []
        self.memo: dict[object, _Item] = {}

    def _resolve(self, module: str, attr: str) -> _Item:
        try:
            return ("global", self.resolve(module, attr))
        except Exception as exc:
            raise _NotResolved(exc) from None

    def step(self, opcode: pickletools.OpcodeInfo, arg: t.Any) -> None:
        name, stack = opcode.name, self.stack
        if name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in _MEMO_PUT:
            self.memo[arg] = stack[-1]
        elif name in _MEMO_GET:
            stack.append(self.memo.get(arg, _FRESH))
        elif name == "DUP":
            stack.append(stack[-1])
        elif name.startswith("EXT"):
            # Answered from copyreg's cache without asking the allowlist.
            raise UnsafePickle(f"{name} names a global by an extension code")
        else:
            made = self._made(name, arg, opcode.stack_before)
            for item in opcode.stack_after:
                stack.append(_MARK if item is pickletools.markobject else made)

    def _made(self, name: str, arg: t.Any, before: list[t.Any]) -> _Item:
        """Pop what ``name`` consumes; return the kind of what it pushes."""
        stack = self.stack
        if name == "GLOBAL" or name == "INST":
            module, _, attr = arg.partition(" ")
            made = self._resolve(module, attr)
            if name == "INST":
                made = _called(made)
        elif name == "STACK_GLOBAL":
            module, attr = stack[-2], stack[-1]
            if module[0] != "str" or attr[0] != "str":
                raise UnsafePickle("STACK_GLOBAL with names that are not text")
            made = self._resolve(t.cast(str, module[1]), t.cast(str, attr[1]))
        elif name in _CALL_AT:
            made = _called(stack[-_CALL_AT[name]])
        elif name == "OBJ":
            made = _called(stack[_last_mark(stack) + 1])
        elif name in _TEXT:
            made = ("str", arg)
        else:
            made = _FRESH
        self._pop(name, before)
        return made

    def _pop(self, name: str, before: list[t.Any]) -> None:
        """Take what ``name`` consumes off the stack, refusing a change to a
        shared object."""
        stack = self.stack
        if pickletools.markobject in before:
            start = _last_mark(stack) - before.index(pickletools.markobject)
            if start < 0:
                raise UnsafePickle("stack underflow")
            if name in _CHANGE_BELOW_MARK:
                _refuse_change(name, stack[start])
            del stack[start:]
        elif name == "POP" and stack[-1] is _MARK:
            stack.pop()
        elif before:
            if len(stack) < len(before):
                raise UnsafePickle("stack underflow")
            depth = _CHANGE_AT.get(name)
            if depth is not None:
                _refuse_change(name, stack[-depth])
            del stack[-len(before) :]


def _last_mark(stack: list[_Item]) -> int:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            return index
    raise UnsafePickle("no mark on the stack")


def _called(callee: _Item) -> _Item:
    """Kind of what calling ``callee`` returns: an Enum gives its existing
    members, so they are shared; anything else is taken as built anew."""
    kind, value = callee
    if kind == "global" and isinstance(value, enum.EnumMeta):
        return _SHARED
    return _FRESH


def _refuse_change(name: str, target: _Item) -> None:
    if target[0] in ("global", "shared"):
        what = "an Enum member" if target[0] == "shared" else "a global"
        raise UnsafePickle(f"{name} would change {what} as it loads")
