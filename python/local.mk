# The duet Python package (DESIGN §2, docs/python.md): vLLM's LLM / SamplingParams over libduet
# through ctypes. Nothing is compiled. make stages the package in the build tree
# (python/duet/, beside the pyproject.toml configure wrote) with a _paths.py that points at this
# build's libduet and workers, so the tests import it from there and `pip install build/python`
# works; make install puts the sources in $(pythondir)/duet with a _paths.py naming the
# installed library.
PY_PACKAGE = python/duet/__init__.py python/duet/_lib.py python/duet/llm.py \
	python/duet/outputs.py python/duet/sampling_params.py python/duet/tokenizer.py
EXTRA_DIST += python/pyproject.toml.in docs/python.md
DISTCLEANFILES += python/pyproject.toml

if HAVE_PYTHON
duetpydir = $(pythondir)/duet
duetpy_PYTHON = $(PY_PACKAGE)

all-local: python/duet/_paths.py
# The staged copy (only in a build tree apart from the sources) and the build tree's paths.
python/duet/_paths.py: $(PY_PACKAGE) Makefile libduet.la
	$(AM_V_GEN)$(MKDIR_P) python/duet && \
	if test '$(abs_srcdir)' != '$(abs_builddir)'; then \
	  for f in $(PY_PACKAGE); do cp '$(srcdir)'/$$f python/duet/ || exit 1; done; \
	  chmod u+w python/duet/*.py; \
	fi && \
	dlname=`sed -n "s/^dlname='\(.*\)'/\1/p" libduet.la` && \
	{ echo '# Written by make: this build tree'\''s libduet and workers.'; \
	  echo "LIBRARY = '$(abs_builddir)/.libs/$$dlname'"; \
	  echo "PLUGIN_DIRS = ['$(abs_builddir)/cpu_worker/.libs', '$(abs_builddir)/gpu_worker/.libs']"; \
	  echo "VERSION = '$(PACKAGE_VERSION)'"; } >$@.tmp && mv $@.tmp $@

# The installed package names the installed library (libtool's dlname: the soname).
install-data-hook: install-python-paths
install-python-paths:
	dlname=`sed -n "s/^dlname='\(.*\)'/\1/p" libduet.la` && \
	{ echo '# Written by make install: the installed libduet.'; \
	  echo "LIBRARY = '$(libdir)/$$dlname'"; \
	  echo "PLUGIN_DIRS = []"; \
	  echo "VERSION = '$(PACKAGE_VERSION)'"; } >'$(DESTDIR)$(duetpydir)/_paths.py'
uninstall-hook: uninstall-python-paths
uninstall-python-paths:
	-rm -f '$(DESTDIR)$(duetpydir)/_paths.py'


# The suites: Python's unittest, one TESTS entry per file (tests/python_run.sh sets the paths).
PY_TESTS = tests/python/test_abi.py tests/python/test_sampling_params.py \
	tests/python/test_llm.py tests/python/test_errors.py
TESTS += $(PY_TESTS) tests/python_pip.sh
PY_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/python_run.sh
AM_PY_LOG_FLAGS = '$(PYTHON)'
endif
TEST_EXTENSIONS += .py
clean-local: clean-python
clean-python:
	-rm -rf python/duet/_paths.py python/duet/__pycache__ python/build python/*.egg-info
	-test '$(abs_srcdir)' = '$(abs_builddir)' || \
	  for f in $(PY_PACKAGE); do rm -f python/duet/`basename $$f`; done
# The example of the issue from the installed tree: the package in $(DESTDIR)$(pythondir) over
# the installed libduet and CPU worker (tests/python_installed.sh).
installcheck-local: installcheck-python
installcheck-python:
	@if test -z '$(PYTHON)' || test '$(PYTHON)' = ':'; then \
	  echo "installcheck-python: SKIP (configured without Python)"; \
	else \
	  DESTDIR='$(DESTDIR)' PYTHON='$(PYTHON)' pythondir='$(pythondir)' libdir='$(libdir)' \
	  pkglibdir='$(pkglibdir)' DUET_TEST_BUILDDIR='$(abs_top_builddir)' \
	  DUET_TEST_SRCDIR='$(abs_top_srcdir)' $(SHELL) $(top_srcdir)/tests/python_installed.sh; \
	fi
.PHONY: clean-python install-python-paths uninstall-python-paths installcheck-python
EXTRA_DIST += tests/python_run.sh tests/python_pip.sh tests/sanitizer_preload.sh tests/python_installed.sh \
	tests/python/test_abi.py tests/python/test_sampling_params.py \
	tests/python/test_llm.py tests/python/test_errors.py tests/python/models.py \
	examples/python/taco_llm.py
