"""EXPLAIN of one statement, plan only unless ANALYZE is asked for; always rolled back."""

from sqlalchemy import text
from sqlalchemy.engine import Connection


class NotOneStatement(ValueError):
    pass


def single_statement(sql_text: str) -> str:
    """The statement without trailing semicolons; refuses empty or multi-statement input.
    Understands quotes, quoted identifiers, dollar quotes and comments, so a ';' inside them is fine."""
    text_ = sql_text.strip()
    i, n = 0, len(text_)
    end = None
    while i < n:
        c = text_[i]
        if c in ("'", '"'):
            i = text_.find(c, i + 1)
            while i != -1 and i + 1 < n and text_[i + 1] == c:  # doubled quote
                i = text_.find(c, i + 2)
            if i == -1:
                raise NotOneStatement("An unterminated quote.")
        elif text_.startswith("--", i):
            newline = text_.find("\n", i)
            i = n if newline == -1 else newline
        elif text_.startswith("/*", i):
            close = text_.find("*/", i + 2)
            if close == -1:
                raise NotOneStatement("An unterminated comment.")
            i = close + 1
        elif c == "$":
            close_tag = text_.find("$", i + 1)
            tag = text_[i : close_tag + 1] if close_tag != -1 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "a").isalnum()) and not tag[1:2].isdigit():
                close = text_.find(tag, close_tag + 1)
                if close == -1:
                    raise NotOneStatement("An unterminated dollar quote.")
                i = close + len(tag) - 1
        elif c == ";":
            if text_[i + 1 :].strip(" \t\r\n;"):
                raise NotOneStatement("Only one statement can be explained at a time.")
            end = i
            break
        i += 1
    statement = (text_[:end] if end is not None else text_).strip()
    if not statement:
        raise NotOneStatement("Enter a statement to explain.")
    return statement


def explain(conn: Connection, sql_text: str, analyze: bool = False) -> list[str]:
    statement = single_statement(sql_text)
    if not analyze:
        conn.execute(text("SET TRANSACTION READ ONLY"))
    options = "ANALYZE, BUFFERS, VERBOSE" if analyze else "VERBOSE"
    # The statement is the operator's own SQL, explained inside a transaction that is rolled back.
    # Its ':name' text must not be taken for bind parameters, hence exec_driver_sql.
    result = conn.exec_driver_sql(f"EXPLAIN ({options}) {statement}".replace("%", "%%"))
    return [row[0] for row in result]
