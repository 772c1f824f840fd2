#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests drive besides Go and Redis and the machine
# lacks: a real browser (chromium, headless) and what the client examples need (nodejs and tsc,
# python3). Installs nothing when all are there.
exec "$(dirname "$0")/debian-deps.sh" test-deps chromium:chromium node:nodejs tsc:node-typescript python3:python3
