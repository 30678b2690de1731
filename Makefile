SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES := espeak-ng sox libsndfile1 libportaudio2 pulseaudio pulseaudio-utils \
	libasound2-plugins alsa-utils dbus-daemon dbus-bin libglib2.0-bin systemd \
	libsystemd-dev pkg-config cmake build-essential xvfb trayer xdotool x11-apps \
	libgirepository1.0-dev libcairo2-dev gir1.2-gtk-3.0 ffmpeg \
	desktop-file-utils
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup apt venv run demo test bench install uninstall clean

setup: apt $(VENV)/.installed

apt:
	@if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo ">> apt: installing $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo ">> apt: all packages present"; fi

$(VENV)/.installed: requirements.txt requirements-nodeps.txt constraints.txt setup.cfg
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	@echo ">> torch==2.13.0 first (CPU wheel)"
	$(PIP) install -q torch==2.13.0
	@echo ">> the rest (llama-cpp-python compiles from source the first time: 8-16 min)"
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -c constraints.txt -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps -e .
	touch $@

# The main job: the always-on assistant on the default microphone and speaker (Ctrl-C stops it).
run: setup
	$(VENV)/bin/sottovoced

# One spoken question answered into reply.wav, no sound card needed.
demo: setup
	$(VENV)/bin/sottovoce ask --local --wav tests/data/question_lighthouse.wav --out reply.wav

test: setup
	$(VENV)/bin/python -m pytest -q tests

bench: setup
	$(VENV)/bin/python -m bench

install: setup
	$(VENV)/bin/sottovoce install-service

uninstall:
	$(VENV)/bin/sottovoce install-service --uninstall

clean:
	rm -rf $(VENV)
