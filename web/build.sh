#!/usr/bin/env bash
# Rebuild the review page's vendored NiiVue from the npm registry (pinned in package-lock.json)
# and copy its self-contained browser bundle next to the page. The result is committed, so a
# user's `pip install` needs no npm and nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
static=../src/automedseg/serve/static
cp node_modules/@niivue/niivue/dist/niivue.umd.js "$static/niivue.umd.js"
version=$(node -p "require('./node_modules/@niivue/niivue/package.json').version")
license=$(node -p "require('./node_modules/@niivue/niivue/package.json').license")
sed -e "s/@VERSION@/$version/" -e "s/@LICENSE@/$license/" NIIVUE_LICENSE.in > "$static/NIIVUE_LICENSE.txt"
sha256sum "$static/niivue.umd.js"
