"""Lists sorted by their column headers and shown a page at a time. Every header and page link
keeps the list's other query parameters (its filters), so sorting never drops a filter."""

from dataclasses import dataclass

from django.core.paginator import Paginator
from django.db.models import F
from django.db.models.expressions import BaseExpression


@dataclass(frozen=True)
class Column:
    key: str  # the value of ?sort=; "-key" sorts descending
    header: str
    order_by: tuple = ()  # field names or expressions; empty: the column does not sort
    numeric: bool = False
    title: str = ""


@dataclass(frozen=True)
class Header:
    column: Column
    href: str
    current: str  # "ascending", "descending" or "" (the aria-sort value)


class SortedPage:
    """One page of `queryset` in the order the request's ?sort= names (one of `columns`)."""

    def __init__(self, request, queryset, columns: list[Column], default: str, per_page: int):
        by_key = {column.key: column for column in columns if column.order_by}
        sort = request.GET.get("sort", default)
        if sort.lstrip("-") not in by_key:
            sort = default
        self.sort, self.descending = sort.lstrip("-"), sort.startswith("-")
        self.params = request.GET.copy()
        ordering = [_ordered(field, self.descending) for field in by_key[self.sort].order_by]
        self.page = Paginator(queryset.order_by(*ordering, "-pk" if self.descending else "pk"), per_page
                              ).get_page(request.GET.get("page"))
        self.headers = [self._header(column) for column in columns]

    def _header(self, column: Column) -> Header:
        if not column.order_by:
            return Header(column, "", "")
        current = column.key == self.sort
        # the current column's link turns it round; another column's starts ascending
        key = f"-{column.key}" if current and not self.descending else column.key
        state = ("descending" if self.descending else "ascending") if current else ""
        return Header(column, self.query(sort=key, page=None), state)

    def query(self, **changes) -> str:
        """`?` and this list's parameters with `changes` applied (None removes one)."""
        params = self.params.copy()
        for name, value in changes.items():
            if value is None:
                params.pop(name, None)
            else:
                params[name] = value
        return f"?{params.urlencode()}"

    def page_href(self, number: int) -> str:
        return self.query(page=number)

    @property
    def previous_href(self) -> str:
        return self.page_href(self.page.previous_page_number()) if self.page.has_previous() else ""

    @property
    def next_href(self) -> str:
        return self.page_href(self.page.next_page_number()) if self.page.has_next() else ""


def _ordered(field, descending: bool):
    expression = field if isinstance(field, BaseExpression) else F(field)
    return expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)
