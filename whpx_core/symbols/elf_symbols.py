"""ELF symbol table lookups both ways: name -> address, address -> symbol+offset."""

from __future__ import annotations

import bisect


class SymbolTable:
    def __init__(self, symbols: dict[str, int]) -> None:
        self._by_name = dict(symbols)
        # Prefer names that are not compiler-internal ('.L...') when several share an address.
        ordered = sorted(symbols.items(), key=lambda item: (item[1], item[0].startswith("."),
                                                             item[0]))
        self._addresses: list[int] = []
        self._names: list[str] = []
        for name, address in ordered:
            if self._addresses and self._addresses[-1] == address:
                continue
            self._addresses.append(address)
            self._names.append(name)

    def address_of(self, name: str) -> int | None:
        return self._by_name.get(name)

    def lookup(self, address: int, max_offset: int = 1 << 20) -> tuple[str, int] | None:
        """The nearest symbol at or below `address`, and the offset from it."""
        at = bisect.bisect_right(self._addresses, address) - 1
        if at < 0 or address - self._addresses[at] > max_offset:
            return None
        return self._names[at], address - self._addresses[at]

    def describe(self, address: int) -> str:
        found = self.lookup(address)
        if found is None:
            return f"{address:#x}"
        name, offset = found
        return f"{name}+{offset:#x}" if offset else name

    def exact(self, address: int) -> str | None:
        found = self.lookup(address, 0)
        return found[0] if found else None
