"""An adapter's SQL as SQLite reads it: its tokens, and whose rows each table it names can be.

Every table reference (each alias, in every scope: joins, subqueries, CTEs) must be tied to the
subject: some column of it is compared with :local_id, or equals (`=`, `==`, `IS`, `IN (x)`) a
column that is, or equals the unique key of a row so tied (`r.loan_id = l.loan_id` where l is
the subject's loan). Only conditions every row meets count (AND-joined terms of WHERE and of
an inner join's ON; a LEFT JOIN's ON ties only the table it joins). Columns are equal only with
the same type affinity and collation, so that "equal" means what `= :local_id` means. A form
whose rows cannot be traced this way (a view, a RIGHT/FULL/NATURAL join, a parenthesised join)
is `Unsupported`. credex.node.config_check adds what EXPLAIN QUERY PLAN shows."""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- tokens


_CLOSERS = {"'": "'", '"': '"', "`": "`", "[": "]"}


def _quoted_end(sql: str, i: int) -> int:
    """Where the literal or quoted name opening at `i` ends (its closing quote; len(sql) if
    none); a doubled quote inside it is a quote."""
    closer = _CLOSERS[sql[i]]
    end = sql.find(closer, i + 1)
    while end != -1 and sql[i] != "[" and sql.startswith(closer * 2, end):
        end = sql.find(closer, end + 2)
    return len(sql) if end == -1 else end


def _comment_end(sql: str, i: int) -> int | None:
    """Where the comment starting at `i` ends (just after it), or None if none starts there."""
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return len(sql) if end == -1 else end + 1
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return len(sql) if end == -1 else end + 2
    return None


def code_positions(sql: str) -> Iterator[tuple[int, str]]:
    """(position, character) of the SQL outside string literals, quoted names and comments."""
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in _CLOSERS:
            i = _quoted_end(sql, i) + 1
        elif (end := _comment_end(sql, i)) is not None:
            i = end
        else:
            yield i, ch
            i += 1


def statement_body(sql: str) -> str:
    """The statement without a final `;` (and what follows it), so that it can stand inside
    parentheses as a subquery."""
    last = None
    for position, ch in code_positions(sql):
        if not ch.isspace():
            last = (position, ch)
    return sql[: last[0]] if last is not None and last[1] == ";" else sql


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "name" (quoted identifier), "string", "param", "number", "op"
    text: str

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "word" else ""


_LEXEME = re.compile(
    r"(?P<param>\?\d*|(?<![A-Za-z0-9_$])[:@$][A-Za-z0-9_]+)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"
    r"|(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
    r"|(?P<op>==|!=|<>|<=|>=|\|\||<<|>>|\S)"
)


def tokens(sql: str) -> list[Token]:
    """The SQL's tokens, comments left out; string literals and quoted names as one token."""
    found: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif ch in _CLOSERS:
            end = _quoted_end(sql, i)
            found.append(Token("string" if ch == "'" else "name", sql[i + 1 : end]))
            i = end + 1
        elif (after := _comment_end(sql, i)) is not None:
            i = after
        else:
            match = _LEXEME.match(sql, i)
            assert match is not None and match.lastgroup is not None  # \S matches anything
            found.append(Token(match.lastgroup, match.group(0)))
            i = match.end()
    return found


# --------------------------------------------------------------------------- structure


class Unsupported(Exception):
    """The SELECT has a form whose rows cannot be traced to the subject; the message says
    which."""


@dataclass
class Group:
    """A parenthesised part, or a CASE … END, with what it holds."""

    kind: str  # "(" or "CASE"
    items: list[Item]


Item = Token | Group


def _tree(toks: Sequence[Token]) -> list[Item]:
    root: list[Item] = []
    stack: list[Group] = []
    for tok in toks:
        here = stack[-1].items if stack else root
        if (tok.text == "(" and tok.kind == "op") or tok.word == "CASE":
            group = Group("(" if tok.kind == "op" else "CASE", [])
            here.append(group)
            stack.append(group)
        elif tok.text == ")" and tok.kind == "op":
            if not stack or stack.pop().kind != "(":
                raise Unsupported("its parentheses do not match")
        elif tok.word == "END" and stack and stack[-1].kind == "CASE":
            stack.pop()
        else:
            here.append(tok)
    if stack:
        raise Unsupported("its parentheses do not match")
    return root


def _word(items: Sequence[Item], i: int) -> str:
    item = items[i] if 0 <= i < len(items) else None
    return item.word if isinstance(item, Token) else ""


def _op(items: Sequence[Item], i: int, text: str) -> bool:
    item = items[i] if 0 <= i < len(items) else None
    return isinstance(item, Token) and item.kind == "op" and item.text == text


def _is_query(item: Item) -> bool:
    return (
        isinstance(item, Group)
        and item.kind == "("
        and _word(item.items, 0) in ("SELECT", "WITH", "VALUES")
    )


def _is_name(item: Item) -> bool:
    return isinstance(item, Token) and item.kind in ("word", "name")


def _split(items: Sequence[Item], separator: str) -> list[list[Item]]:
    parts: list[list[Item]] = [[]]
    for item in items:
        if isinstance(item, Token) and item.kind == "op" and item.text == separator:
            parts.append([])
        else:
            parts[-1].append(item)
    return parts


def _conjuncts(items: Sequence[Item]) -> Iterator[list[Item]]:
    """The terms joined by AND (the AND of a BETWEEN excepted), parentheses opened."""
    parts: list[list[Item]] = [[]]
    between = False
    for item in items:
        word = item.word if isinstance(item, Token) else ""
        if word == "BETWEEN":
            between = True
        if word == "AND" and not between:
            parts.append([])
            continue
        if word == "AND":
            between = False
        parts[-1].append(item)
    for part in parts:
        only = part[0] if len(part) == 1 else None
        if isinstance(only, Group) and only.kind == "(" and not _is_query(only):
            yield from _conjuncts(only.items)
        else:
            yield part


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Column:
    affinity: str
    collation: str


def _affinity(declared: str) -> str:
    """SQLite's rules for the affinity of a declared column type."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(s in kind for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(s in kind for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


ROWID = "rowid"
ROWID_NAMES = ("rowid", "oid", "_rowid_")


class Schema:
    """What the operator's database says about its tables (lower-case names), cached."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._columns: dict[str, dict[str, Column]] = {}
        self._keys: dict[str, set[str]] = {}

    def kind(self, name: str) -> str | None:
        row = self._conn.execute(
            "SELECT type FROM sqlite_master WHERE lower(name) = ? AND type IN ('table', 'view')",
            (name.lower(),),
        ).fetchone()
        return str(row[0]) if row else None

    def columns(self, table: str) -> dict[str, Column]:
        """Each column by its canonical name: an INTEGER PRIMARY KEY is `rowid`."""
        if table not in self._columns:
            collations = self._declared_collations(table)
            found: dict[str, Column] = {}
            info = list(self._conn.execute("SELECT * FROM pragma_table_info(?)", (table,)))
            keys = [row for row in info if row[5]]
            alias = (
                str(keys[0][1]).lower()
                if len(keys) == 1 and str(keys[0][2]).upper() == "INTEGER" and self._rowid(table)
                else None
            )
            for row in info:
                name = str(row[1]).lower()
                column = Column(_affinity(str(row[2] or "")), collations.get(name, "BINARY"))
                found[ROWID if name == alias else name] = column
            if self._rowid(table) and ROWID not in found:
                found[ROWID] = Column("INTEGER", "BINARY")
            self._columns[table] = found
        return self._columns[table]

    def canonical(self, table: str, column: str) -> str | None:
        """The name `columns` knows `column` by, None if the table has no such column."""
        name = column.lower()
        columns = self.columns(table)
        if name in columns:
            return name
        if name in ROWID_NAMES and ROWID in columns:
            return ROWID
        alias = [n for n in self._declared_names(table) if n == name]
        return ROWID if alias and ROWID in columns else None

    def unique_keys(self, table: str) -> set[str]:
        """Columns no two rows share, compared with the column's own collation: the rowid,
        and the single column of a UNIQUE index or PRIMARY KEY (not a partial one)."""
        if table not in self._keys:
            columns = self.columns(table)
            keys = {ROWID} if ROWID in columns else set()
            for _, index, unique, _, partial in self._conn.execute(
                "SELECT seq, name, [unique], origin, partial FROM pragma_index_list(?)", (table,)
            ):
                if not unique or partial:
                    continue
                parts = [
                    row
                    for row in self._conn.execute("SELECT * FROM pragma_index_xinfo(?)", (index,))
                    if row[5]
                ]
                if len(parts) != 1 or parts[0][1] < 0:
                    continue
                name = self.canonical(table, str(parts[0][2]))
                if name is not None and str(parts[0][4]).upper() == columns[name].collation:
                    keys.add(name)
            self._keys[table] = keys
        return self._keys[table]

    def _rowid(self, table: str) -> bool:
        try:
            quoted = table.replace('"', '""')
            self._conn.execute(f'SELECT rowid FROM "{quoted}" LIMIT 0')
        except sqlite3.Error:
            return False  # a WITHOUT ROWID table
        return True

    def _declared_names(self, table: str) -> list[str]:
        return [str(row[1]).lower() for row in self._conn.execute(
            "SELECT * FROM pragma_table_info(?)", (table,)
        )]  # fmt: skip

    def _declared_collations(self, table: str) -> dict[str, str]:
        """COLLATE of each column as its CREATE TABLE writes it (pragmas do not say)."""
        row = self._conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND lower(name) = ?", (table,)
        ).fetchone()
        items = _tree(tokens(str(row[0]))) if row else []
        body = next((i for i in items if isinstance(i, Group)), None)
        if body is None or "AS" in {_word(items, i) for i in range(items.index(body))}:
            return {}  # CREATE TABLE … AS SELECT: no declared collations
        found: dict[str, str] = {}
        for part in _split(body.items, ","):
            if not part or not _is_name(part[0]):
                continue
            for i in range(1, len(part) - 1):
                if _word(part, i) == "COLLATE" and _is_name(part[i + 1]):
                    found[str(part[0].text).lower()] = str(part[i + 1].text).upper()  # type: ignore[union-attr]
        return found


# --------------------------------------------------------------------------- scopes

Node = tuple[int, str]  # (table reference, canonical column); the parameter is PARAM
PARAM: Node = (-1, ":local_id")
_JOIN = frozenset({"NATURAL", "LEFT", "RIGHT", "FULL", "OUTER", "INNER", "CROSS", "JOIN"})
_CLAUSES = frozenset({"FROM", "WHERE", "GROUP", "HAVING", "WINDOW", "ORDER", "LIMIT"})
_NOT_ALIAS = _JOIN | _CLAUSES | {"ON", "USING", "INDEXED", "NOT", "AS"}


@dataclass
class Ref:
    """One table reference of the SELECT."""

    scope: int
    alias: str  # lower-case: the name EXPLAIN QUERY PLAN shows for it
    table: str | None  # a table of the database, lower-case; None for a subquery or function
    body: int | None  # the scope of a subquery in FROM or of a CTE
    name: str  # as written, for messages


@dataclass
class Scope:
    parent: int | None
    refs: list[int] = field(default_factory=list)
    ctes: dict[str, int] = field(default_factory=dict)
    result_names: set[str] = field(default_factory=set)


class Tying:
    """Which columns of which table references an adapter's SELECT ties to the subject."""

    def __init__(self, conn: sqlite3.Connection, sql: str) -> None:
        self.schema = Schema(conn)
        self.refs: list[Ref] = []
        self.scopes: list[Scope] = []
        self._edges: dict[Node, set[Node]] = {}
        self._select(_tree(tokens(statement_body(sql))), None)
        # Each tied column, with the references its tie comes through (-1: the parameter).
        self.tied: dict[Node, set[int]] = {}
        self._tie()

    def untied(self) -> list[Ref]:
        """Table references none of whose rows is known to be the subject's (a subquery in
        FROM or a CTE is judged by the tables it reads)."""
        tied = {ref for ref, _ in self.tied}
        return [
            r
            for i, r in enumerate(self.refs)
            if i not in tied and not (r.table is None and r.body is not None)
        ]

    def search_columns(self, ref: int) -> set[str]:
        """The columns of `ref` a search may find its rows by: tied through something else than
        the reference's own key."""
        return {
            column
            for (owner, column), origins in self.tied.items()
            if owner == ref and origins - {ref}
        }

    # -- parsing

    def _scope(self, parent: int | None) -> int:
        self.scopes.append(Scope(parent))
        return len(self.scopes) - 1

    def _select(self, items: list[Item], parent: int | None) -> int:
        i = 0
        if _word(items, 0) == "WITH":
            parent = self._scope(parent)  # holds the CTEs, no tables
            i = 2 if _word(items, 1) == "RECURSIVE" else 1
            while True:
                name = items[i] if i < len(items) else None
                if not isinstance(name, Token) or not _is_name(name):
                    raise Unsupported("its WITH clause could not be read")
                i += 1
                if i < len(items) and isinstance(items[i], Group) and not _is_query(items[i]):
                    i += 1  # the CTE's column names
                if _word(items, i) != "AS":
                    raise Unsupported("its WITH clause could not be read")
                i += 1
                while _word(items, i) in ("NOT", "MATERIALIZED"):
                    i += 1
                body = items[i] if i < len(items) else None
                if not isinstance(body, Group) or not _is_query(body):
                    raise Unsupported("its WITH clause could not be read")
                self.scopes[parent].ctes[name.text.lower()] = self._select(body.items, parent)
                i += 1
                if not _op(items, i, ","):
                    break
                i += 1
        scope = self._scope(parent)
        rest = items[i:]
        if _word(rest, 0) == "VALUES":
            self._subqueries(rest, scope)
            return scope
        if _word(rest, 0) != "SELECT":
            raise Unsupported("it is not a SELECT")
        if any(_word(rest, j) in ("UNION", "INTERSECT", "EXCEPT") for j in range(len(rest))):
            raise Unsupported("it is a compound SELECT")
        marks = [j for j in range(len(rest)) if _word(rest, j) in _CLAUSES]
        if len({_word(rest, j) for j in marks}) < len(marks):
            raise Unsupported("a clause keyword comes twice (`IS DISTINCT FROM`?)")
        marks.append(len(rest))
        clauses = {_word(rest, a): rest[a + 1 : b] for a, b in itertools.pairwise(marks)}
        result = rest[1 : marks[0]]
        for part in _split(result, ","):
            if part and _is_name(part[-1]):
                self.scopes[scope].result_names.add(str(part[-1].text).lower())  # type: ignore[union-attr]
        self._from(clauses.get("FROM", []), scope)
        for term in _conjuncts(clauses.get("WHERE", [])):
            self._condition(term, scope, None)
        self._subqueries(result, scope)
        for word, clause in clauses.items():
            if word != "FROM":
                self._subqueries(clause, scope)
        return scope

    def _subqueries(self, items: Sequence[Item], scope: int) -> None:
        for item in items:
            if isinstance(item, Group):
                if _is_query(item):
                    self._select(item.items, scope)
                else:
                    self._subqueries(item.items, scope)

    def _from(self, items: list[Item], scope: int) -> None:
        i, outer, joined = 0, False, []
        while i < len(items):
            ref, i = self._table(items, i, scope)
            joined.append(ref)
            if _word(items, i) == "ON":
                j = i + 1
                while j < len(items) and not (_op(items, j, ",") or _word(items, j) in _JOIN):
                    j += 1
                on = items[i + 1 : j]
                self._subqueries(on, scope)
                for term in _conjuncts(on):
                    self._condition(term, scope, ref if outer else None)
                i = j
            elif _word(items, i) == "USING":
                names = items[i + 1] if i + 1 < len(items) else None
                if not isinstance(names, Group):
                    raise Unsupported("its USING clause could not be read")
                for part in _split(names.items, ","):
                    if len(part) == 1 and isinstance(part[0], Token):
                        self._using(part[0].text, joined[:-1], ref, outer)
                i += 2
            if i >= len(items):
                break
            if _op(items, i, ","):
                outer, i = False, i + 1
                continue
            words = []
            while _word(items, i) in _JOIN:
                words.append(_word(items, i))
                i += 1
                if words[-1] == "JOIN":
                    break
            if not words or words[-1] != "JOIN":
                raise Unsupported("its FROM clause could not be read")
            if {"NATURAL", "RIGHT", "FULL"} & set(words):
                raise Unsupported(
                    "a NATURAL, RIGHT or FULL join: write JOIN or LEFT JOIN … ON with the columns"
                )
            outer = "LEFT" in words

    def _table(self, items: list[Item], i: int, scope: int) -> tuple[int, int]:
        """The table reference starting at `items[i]`, and where what follows it starts."""
        item = items[i]
        table: str | None = None
        body: int | None = None
        if isinstance(item, Group):
            if not _is_query(item):
                raise Unsupported("a parenthesised join: write the joins one after the other")
            body, name, i = self._select(item.items, scope), "(subquery)", i + 1
        elif _is_name(item):
            name, i = item.text, i + 1
            qualified = _op(items, i, ".") and i + 1 < len(items) and _is_name(items[i + 1])
            if qualified:
                name, i = str(items[i + 1].text), i + 2  # type: ignore[union-attr]
            if i < len(items) and isinstance(items[i], Group) and not _is_query(items[i]):
                i += 1  # a table-valued function: nothing ties its rows
            else:
                cte = None if qualified else self._cte(scope, name.lower())
                kind = self.schema.kind(name) if cte is None else None
                if cte is not None:
                    body = cte
                elif kind == "view":
                    raise Unsupported(f"it reads the view {name}: map the tables it reads")
                elif kind == "table":
                    table = name.lower()
                else:
                    raise Unsupported(f"no table {name}")
        else:
            raise Unsupported("its FROM clause could not be read")
        alias = None
        if _word(items, i) == "AS":
            i += 1
        if i < len(items) and _is_name(items[i]) and _word(items, i) not in _NOT_ALIAS:
            alias, i = str(items[i].text), i + 1  # type: ignore[union-attr]
        if _word(items, i) == "INDEXED":
            i += 3
        elif _word(items, i) == "NOT" and _word(items, i + 1) == "INDEXED":
            i += 2
        self.refs.append(Ref(scope, (alias or name).lower(), table, body, alias or name))
        self.scopes[scope].refs.append(len(self.refs) - 1)
        return len(self.refs) - 1, i

    def _cte(self, scope: int | None, name: str) -> int | None:
        while scope is not None:
            if name in self.scopes[scope].ctes:
                return self.scopes[scope].ctes[name]
            scope = self.scopes[scope].parent
        return None

    def _using(self, column: str, left: list[int], ref: int, outer: bool) -> None:
        """`JOIN b USING (c)`: b.c equals c of the one table before it that has c."""
        mine = self._node(ref, column)
        theirs = [n for r in left if (n := self._node(r, column)) is not None]
        if mine is not None and len(theirs) == 1:
            scope = self.refs[ref].scope
            self._equal(theirs[0], mine, {ref} if outer else set(self.scopes[scope].refs))

    def _condition(self, term: list[Item], scope: int, only: int | None) -> None:
        """An equality every row of the scope meets (of the rows of `only`, for a LEFT JOIN's
        ON). It ties only the scope's own tables: a subquery's WHERE filters the subquery's
        rows, not the outer rows it names."""
        for k, item in enumerate(term):
            if isinstance(item, Token) and (item.text in ("=", "==") or item.word == "IS"):
                left, right = self._operand(term[:k], scope), self._operand(term[k + 1 :], scope)
                break
            if isinstance(item, Token) and item.word == "IN" and k == len(term) - 2:
                values = term[-1]
                if not isinstance(values, Group) or len(values.items) != 1:
                    return
                left = self._operand(term[:k], scope)
                right = self._operand(values.items, scope)
                break
        else:
            return
        if left is not None and right is not None and left != right:
            self._equal(left, right, {only} if only is not None else set(self.scopes[scope].refs))

    def _operand(self, items: Sequence[Item], scope: int) -> Node | None:
        if len(items) == 1 and isinstance(items[0], Token) and items[0].kind == "param":
            return PARAM
        if len(items) == 1 and _is_name(items[0]):
            return self._resolve(scope, None, str(items[0].text))  # type: ignore[union-attr]
        if len(items) == 3 and _is_name(items[0]) and _op(items, 1, ".") and _is_name(items[2]):
            return self._resolve(scope, str(items[0].text), str(items[2].text))  # type: ignore[union-attr]
        return None

    def _resolve(self, scope: int | None, qualifier: str | None, column: str) -> Node | None:
        """The column a name stands for, as SQLite looks it up (innermost scope first); None
        when that cannot be told for sure."""
        while scope is not None:
            refs = self.scopes[scope].refs
            if qualifier is not None:
                named = [r for r in refs if self.refs[r].alias == qualifier.lower()]
                if named:
                    return self._node(named[0], column)
            else:
                if any(self.refs[r].table is None for r in refs):
                    return None  # a subquery's or function's columns are not known here
                owners = [n for r in refs if (n := self._node(r, column)) is not None]
                if len(owners) == 1:
                    return owners[0]
                if owners or column.lower() in self.scopes[scope].result_names:
                    return None
            scope = self.scopes[scope].parent
        return None

    def _node(self, ref: int, column: str) -> Node | None:
        table = self.refs[ref].table
        if table is None:
            return None
        name = self.schema.canonical(table, column)
        return None if name is None else (ref, name)

    def _equal(self, a: Node, b: Node, constrained: set[int]) -> None:
        """a = b holds for the rows of the `constrained` references: each side of them is tied
        when the other side is."""
        if b[0] in constrained:
            self._edges.setdefault(a, set()).add(b)
        if a[0] in constrained:
            self._edges.setdefault(b, set()).add(a)

    # -- tying

    def _column(self, node: Node) -> Column:
        table = self.refs[node[0]].table
        assert table is not None
        return self.schema.columns(table)[node[1]]

    def _tie(self) -> None:
        """Spread the tie from the parameter along equalities between like columns, and from
        a tied reference to its unique keys, until nothing changes."""
        self.tied = {PARAM: {-1}}
        work = [PARAM]
        while work:
            node = work.pop()
            origins = self.tied[node]
            found: list[tuple[Node, set[int]]] = []
            if node != PARAM:
                table = self.refs[node[0]].table
                assert table is not None
                found += [((node[0], key), {node[0]}) for key in self.schema.unique_keys(table)]
            for other in self._edges.get(node, ()):
                if other == PARAM:
                    continue
                if node == PARAM or self._column(node) == self._column(other):
                    found.append((other, origins))
            for other, more in found:
                known = self.tied.setdefault(other, set())
                if not more <= known:
                    known |= more
                    work.append(other)
