"""A real browser (headless Debian Chromium driven by Selenium) against a live server: a teller
logs in, finds an account, makes a transfer above the approval threshold, which waits; a
supervisor logs in, approves it, and sees the balances change. Screenshots of every step are saved
in the test's tmp directory (``pytest --basetemp DIR`` keeps them where you want them)."""

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from conftest import STAFF_PASSWORD, balances
from transfers.models import Approval, Transfer

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or not Path(CHROMEDRIVER).exists():
        pytest.skip("Debian packages chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Steps:
    """Screenshots numbered in the order taken, under the test's tmp directory."""

    def __init__(self, driver, directory: Path):
        self.driver, self.directory, self.count = driver, directory, 0
        directory.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        return path


def _login(driver, base: str, username: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{base}/admin/login/?next=/admin/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(STAFF_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert driver.find_element(By.ID, "find-q")  # the back office's front page


def test_teller_makes_a_transfer_above_the_threshold_and_a_supervisor_approves_it(
    browser, live_server, make_staff, make_account, tmp_path
):
    from selenium.webdriver.common.by import By

    make_staff("teller")
    make_staff("supervisor")
    alice = make_account("db1", "30000.00", holder="Alice Browser")
    bob = make_account("db2", "0.00", holder="Bob Browser")
    amount = settings.APPROVAL_THRESHOLD + Decimal("2000.00")
    steps = Steps(browser, tmp_path / "screenshots")
    base = live_server.url

    # The teller finds Alice by name (her account is in one ledger, Bob's in another).
    _login(browser, base, "teller")
    assert "environment-banner" in browser.page_source
    steps.shot("teller-home")
    browser.find_element(By.ID, "find-q").send_keys("alice brow")
    browser.find_element(By.CSS_SELECTOR, "#find-account input[type=submit]").click()
    assert browser.find_element(By.ID, "find-summary").text.startswith("1 account found")
    steps.shot("teller-found")
    browser.find_element(By.LINK_TEXT, alice.number).click()
    assert browser.find_element(By.ID, "balance-posted").text == "30000.00 CNY"
    steps.shot("teller-account")

    # "New transfer" from Alice's page: above the threshold it waits for approval.
    browser.find_element(By.ID, "new-transfer").click()
    assert browser.find_element(By.ID, "id_source_account").get_attribute("value") == alice.number
    browser.find_element(By.ID, "id_destination_account").send_keys(bob.number)
    browser.find_element(By.ID, "id_amount").send_keys(str(amount))
    browser.find_element(By.ID, "id_reference").send_keys("house deposit")
    steps.shot("teller-transfer-form")
    browser.find_element(By.ID, "submit").click()
    assert "waits for a supervisor's approval" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert browser.find_elements(By.ID, "approve") == []  # the maker cannot approve
    steps.shot("teller-waiting")
    approval = Approval.objects.get()
    assert approval.status == Approval.Status.PENDING
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]

    # The supervisor sees it waiting, approves it, and the money moves.
    _login(browser, base, "supervisor")
    assert browser.find_element(By.ID, "approvals-count").text == "1"
    browser.find_element(By.ID, "approvals-count").click()
    steps.shot("supervisor-queue")
    browser.find_element(By.LINK_TEXT, str(approval.pk)).click()
    steps.shot("supervisor-approval")
    browser.find_element(By.ID, "approve").click()
    assert "Approved and executed" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    steps.shot("supervisor-approved")
    browser.get(f"{base}/admin/accounts/account/{alice.number}/change/")
    assert browser.find_element(By.ID, "balance-posted").text == f"{Decimal('30000.00') - amount} CNY"
    steps.shot("supervisor-alice-after")
    browser.get(f"{base}/admin/accounts/account/{bob.number}/change/")
    assert browser.find_element(By.ID, "balance-posted").text == f"{amount} CNY"
    assert "house deposit" in browser.find_element(By.ID, "statement").text
    steps.shot("supervisor-bob-after")

    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    assert transfer.status == Transfer.Status.COMPLETED and transfer.created_by.username == "teller"
    assert balances(alice, bob) == [Decimal("30000.00") - amount, amount]
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == steps.count == 10
