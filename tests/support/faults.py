"""A port whose one method fails on cue: for tests of retries, quarantine and recovery. Test support only."""

from __future__ import annotations


class Flaky:
    """A store (or object store) whose ``method`` raises the given errors in turn, then works."""

    def __init__(self, inner, method: str, *errors: BaseException, forever: bool = False) -> None:
        self._inner, self._method, self._errors, self._forever = inner, method, list(errors), forever
        self.calls = 0

    def __getattr__(self, name: str):
        real = getattr(self._inner, name)
        if name != self._method:
            return real

        def call(*args, **kwargs):
            self.calls += 1
            if self._errors:
                error = self._errors[0] if self._forever else self._errors.pop(0)
                raise error
            return real(*args, **kwargs)
        return call
