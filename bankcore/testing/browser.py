"""A headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) for the
back office's browser tests: the ``browser`` fixture and ``Walk``, which clicks, reads and takes the
screenshots docs/backoffice.md shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bankcore.testing.personas import STAFF_PASSWORD

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), None)
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTH = 1400


@pytest.fixture
def browser():
    if CHROMIUM is None or not Path(CHROMEDRIVER).exists():
        pytest.skip("Debian packages chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Walk:
    """The browser, the live server, and the screenshots, numbered in the order taken."""

    def __init__(self, driver, base: str, directory: Path):
        self.driver, self.base, self.directory, self.count = driver, base, directory, 0
        directory.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), path

    def get(self, path: str) -> None:
        self.driver.get(f"{self.base}{path}")

    def el(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """What the element says, a no-break space read as a space."""
        return self.el(css).text.replace("\u00a0", " ")

    def type(self, css: str, value: str) -> None:
        field = self.el(css)
        field.clear()
        field.send_keys(value)

    def click(self, css: str, *, stays: bool = False) -> None:
        """Click; unless the click ``stays`` on the page, wait until the browser has left it, so
        that what is read next is read from the page the click led to."""
        if stays:
            self.el(css).click()
        else:
            self._leaving(self.el(css))

    def link(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self._leaving(self.driver.find_element(By.PARTIAL_LINK_TEXT, text))

    def _leaving(self, element) -> None:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        page = self.driver.find_element(By.TAG_NAME, "html")
        element.click()

        def gone(_driver) -> bool:
            # A node of a page the browser has left answers stale, or (mid-navigation) that it
            # belongs to no document: both mean the click led away.
            try:
                page.is_enabled()
            except WebDriverException:
                return True
            return False

        WebDriverWait(self.driver, 30).until(gone)

    def message(self) -> str:
        return self.text("ul.messagelist")

    def login(self, username: str) -> None:
        self.driver.delete_all_cookies()
        self.get("/admin/login/?next=/admin/")
        self.type("#id_username", username)
        self.type("#id_password", STAFF_PASSWORD)
        self.click("input[type=submit]")
        assert self.el("#find-q")  # the back office's front page

    def no_horizontal_scroll(self) -> None:
        """Neither the page nor a list's own box scrolls sideways."""
        width = self.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= WIDTH, f"{self.driver.current_url} is {width} px wide"
        for box in self.els(".results"):
            inner, shown = box.get_property("scrollWidth"), box.get_property("clientWidth")
            assert inner <= shown, f"{self.driver.current_url}: its list is {inner} px in a {shown} px box"

    def focused_id(self) -> str:
        return self.driver.switch_to.active_element.get_attribute("id")
