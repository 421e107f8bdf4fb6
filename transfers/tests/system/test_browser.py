"""A real browser (headless Debian Chromium driven by Selenium) against a live server, one session
walking what each role does in a day, and asserting what the pages say:

- a teller opens an account for a new customer, finds another, pays cash in and out (each through
  its review page), sends a
  transfer that is refused, corrects it and sends it again, asks for approval of a large transfer
  (its amount held at once), withdraws a second request, asks for a large deposit;
- a supervisor approves one request, rejects another, reverses a transfer and freezes an account,
  each with its reason and through its review page;
- an auditor reads the audit trail and checks the books (reconciliation and the audit chain).

Screenshots of every step are saved under the test's tmp directory, or in the directory
``BANKCORE_SCREENSHOTS`` names (``docs/img/backoffice`` holds the ones docs/backoffice.md shows:
``BANKCORE_SCREENSHOTS=docs/img/backoffice pytest transfers/tests/system/test_browser.py``)."""

import os
from decimal import Decimal
from pathlib import Path

import pytest

from bankcore.testing.books import balances, world_snapshot
from bankcore.testing.browser import Walk
from transfers.models import Approval, Transfer

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


def test_a_day_at_the_back_office(browser, live_server, make_staff, make_account, tmp_path):
    people = {"teller": ("Tina", "Teller"), "supervisor": ("Sam", "Supervisor"), "auditor": ("Ada", "Auditor")}
    for role, (first_name, last_name) in people.items():
        user = make_staff(role)
        user.first_name, user.last_name = first_name, last_name
        user.save()
    alice = make_account("db1", "30000.00", holder="Alice Browser")
    bob = make_account("db2", "0.00", holder="Bob Browser")
    carol = make_account("db1", "10000.00", holder="Carol Browser")
    directory = Path(os.environ.get("BANKCORE_SCREENSHOTS") or tmp_path / "screenshots")
    w = Walk(browser, live_server.url, directory)

    # --- the teller ------------------------------------------------------------------------
    w.login("teller")
    assert "environment-banner" in browser.page_source and not w.els("a[href='/']")  # no "View site"
    w.shot("teller-home")
    assert w.focused_id() == "find-q"  # typing starts in "Find account"
    w.type("#find-q", "alice brow")
    w.click("#find-account input[type=submit]")
    assert w.text("#find-summary").startswith("1 account found")
    assert "30,000.00 CNY" in w.text("#find-results")
    w.shot("teller-found")
    # A new customer: found nowhere, an account opened for her from the search (the ledger is
    # the system's choice).
    w.type("#find-q", "Dora Browser")
    w.click("#find-account input[type=submit]")
    assert w.text("#find-summary").startswith("0 accounts found")
    w.click("#open-for")
    assert w.el("#id_holder").get_attribute("value") == "Dora Browser" and w.focused_id() == "id_holder"
    assert not w.els("#id_ledger")
    w.type("#id_opening_deposit", "2,500.00")
    w.shot("teller-open-account")
    w.click("#submit")
    # Reviewed like a movement: who, where it is kept (a code), what is paid in and what it leaves.
    assert w.text("#review-headline") == "Open an account for Dora Browser"
    review = w.text("#review")
    assert "Cash paid in now 2,500.00 CNY" in review and "Balance after 2,500.00 CNY" in review
    w.shot("teller-open-review")
    w.click("#confirm")
    assert "opened for Dora Browser" in w.message() and w.text("#balance-posted") == "2,500.00 CNY"
    w.get("/admin/")
    w.type("#find-q", "alice brow")
    w.click("#find-account input[type=submit]")
    w.link("Alice Browser")
    assert w.text("#balance-posted") == "30,000.00 CNY" and w.text("#balance-available") == "30,000.00 CNY"
    assert w.text("#account-number") == " ".join([alice.number[i : i + 4] for i in range(0, 14, 4)])
    w.shot("teller-account")

    # Cash in, grouped as typed, through its review page.
    w.click("#cash-deposit")
    assert w.focused_id() == "id_amount"
    w.type("#id_amount", "1,500.00")
    w.click("#submit")
    assert w.text("#review-headline") == "Take 1,500.00 CNY in cash and pay it into Alice Browser's account"
    assert "31,500.00 CNY" in w.text("#review")
    w.shot("teller-deposit-review")
    w.click("#confirm")
    assert "Cash deposit of 1500.00 CNY booked" in w.message() or "1,500.00" in w.message()
    assert w.text("#balance-posted") == "31,500.00 CNY"
    # Cash out.
    w.click("#cash-withdrawal")
    w.type("#id_amount", "200")
    w.click("#submit")
    assert "31,300.00 CNY" in w.text("#review")
    w.click("#confirm")
    assert w.text("#balance-posted") == "31,300.00 CNY"
    statement = w.text("#statement")
    assert "-200.00 CNY" in statement and "+1,500.00 CNY" in statement
    w.shot("teller-statement")

    # A transfer refused (more than Carol has), corrected, sent again: booked.
    w.get(f"/admin/accounts/account/{carol.number}/change/")
    w.click("#new-transfer")
    assert w.focused_id() == "id_destination_account"
    dashed = f"{bob.number[:4]}-{bob.number[4:8]}-{bob.number[8:12]}-{bob.number[12:]}"
    w.type("#id_destination_account", dashed)
    w.type("#id_amount", "12,000.00")
    w.click("#submit")
    assert "Carol Browser has only 10,000.00 CNY available" in w.text("#backoffice-form")
    w.click("#confirm")
    errors = w.text("#id_amount-errors")
    assert "10,000.00 available" in errors and "(insufficient_funds)" in errors
    w.shot("teller-transfer-refused")
    w.type("#id_amount", "9,000.00")
    w.click("#submit")
    assert w.text("#review-headline") == "Move 9,000.00 CNY from Carol Browser to Bob Browser"
    w.shot("teller-transfer-review")
    w.click("#confirm")
    assert "Completed" in w.text("#content") and "9,000.00 CNY" in w.text("#content")
    paid = Transfer.objects.get(kind=Transfer.Kind.TRANSFER, status=Transfer.Status.COMPLETED)
    assert balances(carol, bob) == [Decimal("1000.00"), Decimal("9000.00")]

    # Above the threshold: the review says it waits; confirmed, the amount is held at once.
    for amount in ("12,000.00", "11,000.00"):
        w.get(f"/admin/accounts/account/{alice.number}/change/")
        w.click("#new-transfer")
        w.type("#id_destination_account", bob.number)
        w.type("#id_amount", amount)
        w.click("#submit")
        assert "waits for a supervisor's approval" in w.text("#review-note")
        w.click("#confirm")
        assert "waits for a supervisor's approval" in w.message()
    assert "11,000.00 CNY held until" in w.text("#approval-checks")
    w.shot("teller-request-held")
    # The second one is not wanted after all: its maker withdraws it.
    w.click("#withdraw")
    w.click("#confirm")
    assert "withdrawn" in w.message() and "Withdrawn by its maker" in w.text("#content")
    first, second = Approval.objects.order_by("pk")
    assert second.status == Approval.Status.WITHDRAWN
    w.get(f"/admin/accounts/account/{alice.number}/change/")
    assert w.text("#balance-available") == "19,300.00 CNY" and w.text("#balance-pending-debits") == "12,000.00 CNY"
    w.shot("teller-account-held")
    # A large cash deposit for Carol waits too.
    w.get(f"/admin/accounts/account/{carol.number}/deposit/")
    w.type("#id_amount", "20000")
    w.click("#submit")
    w.click("#confirm")
    assert "waits for a supervisor's approval" in w.message()
    w.get("/admin/")
    assert w.text("#own-requests-count") == "2"
    w.shot("teller-home-requests")

    # --- the supervisor --------------------------------------------------------------------
    w.login("supervisor")
    assert w.text("#approvals-count") == "2"
    w.click("#approvals-count")
    w.no_horizontal_scroll()
    queue = w.text("#result_list")
    assert "Tina Teller" in queue and "Alice Browser" in queue and "12,000.00 CNY" in queue
    w.shot("supervisor-queue")
    w.link(f"#{first.pk}")
    checks = w.text("#approval-checks")
    assert "Alice Browser's account is active" in checks and "Bob Browser's account is active" in checks
    assert "12,000.00 CNY held until" in checks and "19,300.00 CNY left available" in checks
    w.shot("supervisor-approval")
    w.click("#approve")
    assert "Bob Browser: balance after" in w.text("#review")
    w.click("#confirm")
    assert "Approved: 12,000.00 CNY moved" in w.message()
    assert balances(alice, bob) == [Decimal("19300.00"), Decimal("21000.00")]
    # The deposit is rejected, with its reason, from the queue.
    deposit = Approval.objects.get(kind=Approval.Kind.DEPOSIT)
    w.get("/admin/transfers/approval/")
    w.click(f"input[name=approval][value='{deposit.pk}']", stays=True)
    w.type("#bulk-reason", "customer did not bring the cash")
    w.click("#bulk-reject")
    assert "customer did not bring the cash" in w.text("#review")
    w.click("#confirm")
    assert f"Rejected: #{deposit.pk}" in w.message()
    w.shot("supervisor-rejected")

    # Reverse the 9,000.00: a reason first, then the badge says so and "Reverse" is gone.
    w.get("/admin/transfers/transfer/")
    w.no_horizontal_scroll()
    w.shot("supervisor-transfers")
    w.get(f"/admin/transfers/transfer/{paid.pk}/change/")
    w.click("#reverse-transfer")
    assert "back from Bob Browser to Carol Browser" in w.text("#explain")
    w.click("#submit")
    assert "This field is required" in w.text("#id_reference-errors")
    w.type("#id_reference", "sent to the wrong customer")
    w.click("#submit")
    assert w.text("#review-headline") == "Move 9,000.00 CNY back from Bob Browser to Carol Browser"
    w.click("#confirm")
    assert "Reversal" in w.message()
    w.get(f"/admin/transfers/transfer/{paid.pk}/change/")
    assert "Reversed" in w.text("#content") and not w.els("#reverse-transfer")
    w.shot("supervisor-reversed")
    assert balances(carol, bob) == [Decimal("10000.00"), Decimal("12000.00")]

    # Freeze Bob's account, with a reason; the page then offers no payments.
    w.get(f"/admin/accounts/account/{bob.number}/change/")
    w.click("#freeze")
    assert "Freezing stops every payment" in w.text("#explain")
    before = world_snapshot(bob)
    w.click("#submit")
    assert "This field is required" in w.text("#id_reason-errors") and world_snapshot(bob) == before
    w.type("#id_reason", "police request 2026/117")
    w.click("#submit")
    assert "police request 2026/117" in w.text("#review") and world_snapshot(bob) == before
    w.click("#confirm")
    assert "Frozen" in w.text("#account-status") and not w.els("#new-transfer") and not w.els("#cash-deposit")
    w.shot("supervisor-frozen")

    # --- the auditor -----------------------------------------------------------------------
    w.login("auditor")
    w.get("/admin/audit/auditevent/")
    w.no_horizontal_scroll()
    w.shot("auditor-trail")
    w.click("#check-books")
    w.click("#run-check")
    result = w.text("#check-result")
    assert "Books balance" in result and "Intact" in result, result
    w.shot("auditor-books-checked")
    w.get("/admin/accounts/account/not-a-number/deposit/")
    assert "403" in browser.title or "permission" in w.text("#content").lower()

    assert Transfer.objects.filter(kind=Transfer.Kind.REVERSAL, status=Transfer.Status.COMPLETED).count() == 1
    assert len(list(directory.glob("*.png"))) >= w.count


def test_find_deposit_review_and_confirm_with_the_keyboard_alone(
    browser, live_server, make_staff, make_account, tmp_path
):
    """Tab and Enter only, from the front page to the deposit booked: each page puts the cursor
    where the work starts (the search box, the account found, the amount, Confirm), and Tab goes
    on in the order the teller fills the form."""
    from selenium.webdriver.common.keys import Keys

    make_staff("teller")
    alice = make_account("db1", "100.00", holder="Alice Keyboard")
    w = Walk(browser, live_server.url, tmp_path)

    def press(*keys: str) -> None:
        browser.switch_to.active_element.send_keys(*keys)

    def leaving(*keys: str) -> None:
        """Keys that send the page away (Enter on a link or a form): wait for the next one."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        page = browser.find_element(By.TAG_NAME, "html")
        press(*keys)

        def gone(_driver) -> bool:
            try:
                page.is_enabled()
            except WebDriverException:
                return True
            return False

        WebDriverWait(browser, 30).until(gone)

    w.login("teller")
    assert w.focused_id() == "find-q"
    press("alice keyb")
    leaving(Keys.ENTER)
    # The search done, the cursor is on the first account found.
    assert browser.switch_to.active_element.text == "Alice Keyboard"
    leaving(Keys.ENTER)
    assert w.text("#account-number").replace(" ", "") == alice.number
    # On the account's page the cursor is on its first action; Tab goes on to the next ones.
    assert w.focused_id() == "new-transfer"
    press(Keys.TAB)
    assert w.focused_id() == "cash-deposit"
    leaving(Keys.ENTER)
    # The amount first; then the reference; then the form's button.
    assert w.focused_id() == "id_amount"
    press("25.50", Keys.TAB)
    assert w.focused_id() == "id_reference"
    press("keyboard", Keys.TAB)
    assert w.focused_id() == "submit"
    leaving(Keys.ENTER)
    assert w.text("#review-headline") == "Take 25.50 CNY in cash and pay it into Alice Keyboard's account"
    assert w.focused_id() == "confirm"  # Enter confirms; Tab reaches "Change"
    press(Keys.TAB)
    assert w.focused_id() == "change"
    press(Keys.SHIFT, Keys.TAB)
    assert w.focused_id() == "confirm"
    leaving(Keys.ENTER)
    assert "Cash deposit of 25.50 CNY booked" in w.message()
    assert balances(alice) == [Decimal("125.50")]
