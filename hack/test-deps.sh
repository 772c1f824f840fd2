#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests drive besides Go and Redis and the machine
# lacks: a real browser (chromium, headless), what the client examples need (nodejs and tsc,
# python3), PyJWT (an independent minter of end users' tokens) and nginx (the app guide's proxy
# recipe is run for real). Installs nothing when all
# are there; services the packages bring are not started (Debian's policy-rc.d on these
# machines, and the test runs its own nginx on a loopback port).
exec "$(dirname "$0")/debian-deps.sh" test-deps chromium:chromium node:nodejs tsc:node-typescript python3:python3 /usr/lib/python3/dist-packages/jwt:python3-jwt nginx:nginx-light
