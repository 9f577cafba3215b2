# The dashboard's browser tests.  Included from the top-level Makefile.
#
#   make test-browser      headless Chromium through Selenium (Debian's
#                          chromium, chromium-driver, python3-selenium;
#                          installed when missing) against a private
#                          ClickHouse + httpd loaded with known data;
#                          screenshots go to tests/browser/artifacts/
#   make docs-screenshot   the same test of the numbers, then its
#                          screenshot is copied to docs/dashboard.png (the
#                          README's picture)

BROWSER_PYTHON ?= $(PYTHON)
BROWSER_PYTEST := $(BROWSER_PYTHON) -m pytest -q -p no:cacheprovider

.PHONY: test-browser docs-screenshot

test-browser: $(MODULE)
	$(BROWSER_PYTEST) tests/browser

docs-screenshot: $(MODULE)
	IMC_UPDATE_DOCS=1 $(BROWSER_PYTEST) tests/browser \
	    -k test_numbers_equal_the_report_api
