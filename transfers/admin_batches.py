"""The back office's "Bulk transfers": a teller uploads a CSV file of transfers, reads every line's
check and the totals, confirms; above the approval threshold a supervisor other than the teller
approves the batch on the same page; then each line's outcome, and the result as a CSV file.

The file: UTF-8, a header row naming the columns ``COLUMNS``, at most ``BATCH_MAX_ITEMS`` lines and
``MAX_FILE_BYTES``. Account numbers and amounts are read as the single transfer form reads them
(``AccountNumberField``, ``AmountField``: "0100 0000 0002 42", "1,000.00"). What is wrong with the
file as a whole refuses it (stored nothing); what is wrong with a line is said beside the line, and
confirming either waits for a corrected file or leaves those lines out, as the teller says. The
services are ``transfers.bulk``'s; these URLs hang under the transfers' admin (``bulk_urls``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse

from accounts.admin import account_words
from accounts.models import Account
from accounts.numbers import account_number_parse
from accounts.selectors import accounts_by_number
from audit.services import audit_refusal_record
from backoffice.display import account_no, money
from backoffice.forms import AccountNumberField, AmountField, IdempotentForm, ReasonForm
from backoffice.pages import admin_actor, backoffice_render, may, require_perm, service_error
from bankcore.errors import ApplicationError
from bankcore.money import money_parse
from transfers.approval_rules import is_checker
from transfers.approvals import approval_reject, approval_withdraw
from transfers.batch import BATCH_MAX_ITEMS
from transfers.bulk import (
    BulkNotFound,
    bulk_approve,
    bulk_execute_approved,
    bulk_state,
    bulk_submit,
    bulk_upload_store,
    sendable,
)
from transfers.models import Approval, BulkUpload, Transfer
from transfers.services import reference_clean

COLUMNS = ("source account", "destination account", "amount", "currency", "reference")
MAX_FILE_BYTES = 512 * 1024
# A cell a spreadsheet would run as a formula (CSV injection): refused, and escaped on the way out.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class BulkUploadForm(IdempotentForm):
    file = forms.FileField(
        label="CSV file",
        allow_empty_file=True,  # refused by ``csv_rows``, with the others' words
        help_text=(
            f"UTF-8, a header row ({', '.join(COLUMNS)}), then one transfer per line; "
            f"at most {BATCH_MAX_ITEMS:,} lines."
        ),
    )

    def clean_file(self) -> list[list[str]]:
        """The file's rows after its header, or the one reason the whole file is refused."""
        upload = self.cleaned_data["file"]
        if upload.size > MAX_FILE_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_FILE_BYTES // 1024} KB.", code="file_too_large")
        data = upload.read()
        self.content_hash = hashlib.sha256(data).hexdigest()
        self.file_name = str(upload.name or "")
        return csv_rows(data)

    def key(self) -> str | None:
        nonce = self.cleaned_data.get("idempotency_key")
        return f"{nonce}.{self.content_hash[:16]}" if nonce else None


def csv_rows(data: bytes) -> list[list[str]]:
    """The rows of a CSV file after its header; raises ``ValidationError`` for a file that cannot
    be read as one: not UTF-8, empty, another header, more lines than a batch takes."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise forms.ValidationError(
            f"The file is not UTF-8 text (byte {error.start + 1} is not); save it as CSV UTF-8.", code="not_utf8"
        ) from None
    if "\x00" in text:
        raise forms.ValidationError("The file contains NUL bytes: it is not a CSV file.", code="not_csv")
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise forms.ValidationError(f"The file cannot be read as CSV: {error}.", code="not_csv") from None
    if not rows:
        raise forms.ValidationError("The file is empty.", code="empty_file")
    header = tuple(cell.strip().lower() for cell in rows[0])
    if header != COLUMNS:
        raise forms.ValidationError(
            f"The first row must name the columns {', '.join(COLUMNS)}; it reads {', '.join(rows[0])[:200]}.",
            code="wrong_columns",
        )
    if len(rows) == 1:
        raise forms.ValidationError("The file has its header but no transfer.", code="empty_file")
    if len(rows) - 1 > BATCH_MAX_ITEMS:
        raise forms.ValidationError(
            f"The file has {len(rows) - 1:,} transfers; a batch has at most {BATCH_MAX_ITEMS:,}.",
            code="batch_too_large",
        )
    return rows[1:]


# --- each line, read and checked -----------------------------------------------------------------


def line_read(number: int, row: list[str]) -> dict[str, Any]:
    """One row as the batch stores it: its cells read as the single forms read them, and the
    problems found in them alone (words, code)."""
    cells = [cell.strip() for cell in row] + [""] * (len(COLUMNS) - len(row))
    line: dict[str, Any] = {
        "line": number,
        "source": AccountNumberField().to_python(cells[0]),
        "destination": AccountNumberField().to_python(cells[1]),
        "amount": cells[2],
        "value": "",
        "currency": cells[3].upper(),
        "reference": cells[4],
        "problems": [],
        "checks": [],
    }
    problems: list[tuple[str, str]] = line["problems"]
    if len(row) != len(COLUMNS):
        problems.append((f"The line has {len(row)} columns; {len(COLUMNS)} are expected.", "wrong_columns"))
        return line
    formulas = [name for name, cell in zip(COLUMNS, cells, strict=True) if cell.startswith(FORMULA_STARTS)]
    if formulas:
        problems.append((f"The {', '.join(formulas)} starts like a spreadsheet formula.", "formula_cell"))
        return line
    for side in ("source", "destination"):
        try:
            account_number_parse(line[side])
        except ApplicationError as error:
            problems.append((f"The {side} account: {error.detail}", error.code))
    try:
        line["value"] = str(money_parse(AmountField().to_python(cells[2])))
    except ApplicationError as error:
        problems.append((error.detail, error.code))
    if len(line["currency"]) != 3 or not line["currency"].isalpha():
        problems.append(("The currency is three letters, e.g. CNY.", "invalid_currency"))
    try:
        reference_clean(cells[4])
    except ApplicationError as error:
        problems.append((error.detail, error.code))
    return line


def lines_check(lines: list[dict[str, Any]]) -> None:
    """Every readable line against the accounts as they are now, in the file's order: both
    accounts exist, are customers' and open, hold the line's currency; not the same account; the
    amount within the maximum; funds and the daily limit counting the lines above it. Writes each
    line's problems and its checks passed, and the holders' names beside the numbers."""
    found = accounts_by_number(numbers=[n for line in lines for n in (line["source"], line["destination"])])
    spent: dict[str, Decimal] = {}
    seen: dict[tuple[str, ...], int] = {}
    for line in lines:
        for side in ("source", "destination"):
            line[f"{side}_holder"] = account_words(line[side], found.get(line[side])) if line[side] in found else ""
        if line["problems"]:
            continue
        problems: list[tuple[str, str]] = line["problems"]
        source, destination = found.get(line["source"]), found.get(line["destination"])
        for side, account in (("source", source), ("destination", destination)):
            problems.extend(account_problems(side, line[side], account, line["currency"]))
        if line["source"] == line["destination"]:
            problems.append(("The source and destination accounts are the same.", "same_account"))
        value = Decimal(line["value"])
        if value > settings.MAX_TRANSFER_AMOUNT:
            problems.append(
                (f"At most {money(settings.MAX_TRANSFER_AMOUNT)} can be moved at once.", "amount_above_maximum")
            )
        same = (line["source"], line["destination"], line["value"], line["currency"], line["reference"])
        if same in seen:
            problems.append((f"The same transfer as line {seen[same]}.", "duplicate_line"))
        seen.setdefault(same, line["line"])
        if problems or source is None:
            continue
        after = spent.get(line["source"], Decimal("0.00")) + value
        if not source.allow_overdraft and after > source.available:
            problems.append(
                (
                    f"{source.holder} has {money(source.available, source.currency)} available; "
                    f"with the lines above, this one needs {money(after, source.currency)}.",
                    "insufficient_funds",
                )
            )
        elif after > settings.DAILY_TRANSFER_LIMIT:
            problems.append(
                (
                    f"With the lines above, {money(after, source.currency)} leaves {source.holder}'s account "
                    f"in this file; the daily limit is {money(settings.DAILY_TRANSFER_LIMIT)}.",
                    "daily_limit_exceeded",
                )
            )
        else:
            spent[line["source"]] = after
            line["checks"] = [
                "Both accounts open, in " + line["currency"],
                f"{money(source.available - after, source.currency)} left available after it",
            ]


def account_problems(side: str, number: str, account: Account | None, currency: str) -> list[tuple[str, str]]:
    if account is None:
        return [(f"No {side} account {account_no(number)}.", "account_not_found")]
    if account.kind != Account.Kind.CUSTOMER:
        return [(f"The {side} account is a ledger's internal account.", "internal_account")]
    if account.status != Account.Status.ACTIVE:
        status = account.get_status_display().lower()
        return [(f"{account.holder}'s {side} account is {status}.", f"account_{account.status}")]
    if account.currency != currency:
        return [(f"{account.holder}'s account holds {account.currency}, not {currency}.", "currency_mismatch")]
    return []


# --- the pages -------------------------------------------------------------------------------------


def bulk_urls(wrap: Any) -> list[Any]:
    """The pages, under the transfers' admin URLs."""
    return [
        path("bulk/", wrap(upload_view), name="transfers_transfer_bulk"),
        path("bulk/<uuid:upload_id>/", wrap(show_view), name="transfers_transfer_bulk_show"),
        path("bulk/<uuid:upload_id>/result.csv", wrap(download_view), name="transfers_transfer_bulk_download"),
    ]


TITLE = "Bulk transfers"


def _render(request: HttpRequest, template: str, status: int = 200, **context: Any) -> HttpResponse:
    return backoffice_render(
        request,
        template=f"admin/transfers/{template}",
        title=TITLE,
        opts=Transfer._meta,
        status=status,
        **context,
    )


def upload_view(request: HttpRequest) -> HttpResponse:
    require_perm(request, "transfers.add_transfer")
    form = BulkUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if form.is_valid():
            lines = [line_read(number, row) for number, row in enumerate(form.cleaned_data["file"], start=2)]
            lines_check(lines)
            upload = bulk_upload_store(
                actor=admin_actor(request),
                upload_key=form.key() or form.content_hash,
                file_name=form.file_name,
                content_hash=form.content_hash,
                lines=lines,
            )
            return HttpResponseRedirect(reverse("admin:transfers_transfer_bulk_show", args=(upload.pk,)))
        codes = [error.code for error in form.errors.as_data().get("file", [])]
        audit_refusal_record(
            actor=admin_actor(request),
            action="bulk.upload",
            object_type="bulk_upload",
            object_id="",
            code=(codes[0] if codes else None) or "invalid_form",
        )
    return _render(request, "batch_upload.html", status=400 if form.errors else 200, form=form, columns=COLUMNS)


def _upload_for(request: HttpRequest, upload_id: Any) -> BulkUpload:
    """The upload, for its maker or whoever may read the approval queue."""
    upload = BulkUpload.objects.select_related("approval", "maker").filter(pk=upload_id).first()
    if upload is None or (upload.maker_id != request.user.pk and not may(request, "transfers.view_approval")):
        raise BulkNotFound(f"No bulk upload {upload_id}.")
    return upload


def show_view(request: HttpRequest, upload_id: Any) -> HttpResponse:
    require_perm(request, "transfers.view_transfer")
    try:
        upload = _upload_for(request, upload_id)
    except ApplicationError as error:
        service_error(request, error)
        return HttpResponseRedirect(reverse("admin:transfers_transfer_bulk"))
    if request.method == "POST":
        _act(request, upload)
        return HttpResponseRedirect(request.path)
    return _render(request, "batch_show.html", **_page(request, upload))


def _act(request: HttpRequest, upload: BulkUpload) -> None:
    """The page's buttons: the maker's confirm and withdraw, a supervisor's approve, reject, run again."""
    actor, action = admin_actor(request), request.POST.get("action", "")
    approval_id = upload.approval_id
    try:
        if action == "confirm":
            require_perm(request, "transfers.add_transfer")
            done = bulk_submit(
                actor=actor,
                user=request.user,
                upload_id=upload.pk,
                content_hash=request.POST.get("content_hash", ""),
                drop_bad="drop_bad" in request.POST,
            )
            if done.status == BulkUpload.Status.WAITING and done.approval is not None:
                messages.warning(request, f"The batch waits for a supervisor's approval (request #{done.approval.pk}).")
        elif action in ("approve", "execute") and approval_id is not None:
            require_perm(request, "transfers.approve_approval")
            decide = bulk_approve if action == "approve" else bulk_execute_approved
            decide(actor=actor, approval_id=approval_id)
        elif action == "reject" and approval_id is not None:
            require_perm(request, "transfers.approve_approval")
            approval_reject(actor=actor, approval_id=approval_id, reason=request.POST.get("reason", ""))
            messages.success(request, "Rejected; nothing was sent.")
        elif action == "withdraw" and approval_id is not None:
            approval_withdraw(actor=actor, approval_id=approval_id)
            messages.success(request, "Request withdrawn; nothing was sent.")
        else:
            messages.error(request, "Nothing to do.")
    except ApplicationError as error:
        service_error(request, error)


def _page(request: HttpRequest, upload: BulkUpload) -> dict[str, Any]:
    state = bulk_state(upload)
    results = {result["line"]: result for result in upload.results}
    lines = [{**line, "result": results.get(line["line"])} for line in upload.lines]
    good = sendable(upload.lines)
    approval = upload.approval
    own = upload.maker_id == request.user.pk
    pending = approval is not None and approval.status == Approval.Status.PENDING
    totals = [(currency, money(total, currency)) for currency, total in upload.totals.items()]
    return {
        "upload": upload,
        "state": state,
        "state_words": BulkUpload.Status(state).label,
        "lines": lines,
        "totals": totals,
        "count": len(upload.lines),
        "good_count": len(good),
        "bad_count": len(upload.lines) - len(good),
        "moved_count": sum(1 for r in upload.results if r["status"] == "moved"),
        "refused_count": sum(1 for r in upload.results if r["status"] == "refused"),
        "approval": approval,
        "threshold": settings.APPROVAL_THRESHOLD,
        "can_confirm": own and state == BulkUpload.Status.PREVIEW and may(request, "transfers.add_transfer"),
        "can_withdraw": own and pending,
        "can_decide": pending and not own and is_checker(request.user),
        "can_execute": approval is not None
        and approval.status == Approval.Status.APPROVED
        and not own
        and is_checker(request.user),
        "own_request": own and pending,
        "reject_form": ReasonForm(),
        "subtitle": f"{upload.file_name}: {len(upload.lines)} lines",
    }


RESULT_COLUMNS = (*COLUMNS, "status", "transfer id", "error code")


def _cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def download_view(request: HttpRequest, upload_id: Any) -> HttpResponse:
    """The file's lines with each one's outcome: moved, refused, left out (a line with problems
    the teller chose not to send), not sent."""
    require_perm(request, "transfers.view_transfer")
    try:
        upload = _upload_for(request, upload_id)
    except ApplicationError as error:
        service_error(request, error)
        return HttpResponseRedirect(reverse("admin:transfers_transfer_bulk"))
    results = {result["line"]: result for result in upload.results}
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="bulk-{upload.pk}-result.csv"'
    writer = csv.writer(response)
    writer.writerow(RESULT_COLUMNS)
    for line in upload.lines:
        result = results.get(line["line"])
        status = result["status"] if result else ("left out" if line["problems"] else "not sent")
        code = result["code"] if result else (line["problems"][0][1] if line["problems"] else "")
        cells = (line["source"], line["destination"], line["amount"], line["currency"], line["reference"])
        writer.writerow([_cell(c) for c in cells] + [status, result["transfer_id"] if result else "", code])
    return response


def bulk_page(approval: Approval) -> str:
    """The page of the upload a batch request is for (where it is decided)."""
    upload = BulkUpload.objects.filter(approval=approval).first()
    if upload is None:
        return reverse("admin:transfers_transfer_bulk")
    return reverse("admin:transfers_transfer_bulk_show", args=(upload.pk,))
