# The two commands the README promises: `make run` (the main job) and `make test` (the whole suite).
# Both do all set-up themselves on a fresh machine (idempotent: a second run installs nothing new).
PYTHON ?= python3
# CPU wheels on the project's CI machines; override on other machines, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export CERVKIT_OUTPUTS ?= $(CURDIR)/outputs
export MPLBACKEND ?= Agg

.PHONY: install install-browser run test test-unit test-notebooks test-browser clean

install:
	$(PYTHON) -m pip install --quiet $(TORCH_SPEC)
	$(PYTHON) -m pip install --quiet -e ".[dev]"

# Debian's Chromium for the editor's real-browser tests (Playwright drives it; no browser download).
install-browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for tests/browser"; fi; }

# Main job: execute every notebook top to bottom (quick mode unless CERVKIT_QUICK=0), executed copies and
# figures land in outputs/.
run: install
	CERVKIT_QUICK=$${CERVKIT_QUICK:-1} $(PYTHON) -m cervkit notebooks --out $(CERVKIT_OUTPUTS)/notebooks

# Whole suite: unit tests (with the editor's real-browser tests) and the notebooks under nbval.
test: install install-browser
	$(PYTHON) -m pytest tests --nbval-lax notebooks -p no:cacheprovider --durations=25

clean:
	rm -rf outputs .pytest_cache
