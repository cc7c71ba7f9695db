#!/usr/bin/env bash
# Push the public release (`make publish` wrote it to _build/public) to the public repository that
# _config.yml names (repository: url): its tree to `main`, the built book (site/) to `gh-pages`.
# Needs DEPLOY_KEY: the private half of a deploy key with write access to that repository.
# `make deploy` runs it; the publish workflow calls `make deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."
release=_build/public
[[ -f $release/site/index.html ]] || { echo "error: no release in $release; run make publish" >&2; exit 2; }
url=$(sed -n 's/^  url: *//p' _config.yml | head -n 1)
[[ $url == https://github.com/* ]] || { echo "error: _config.yml repository url $url is not a GitHub repository" >&2; exit 2; }
[[ -n ${DEPLOY_KEY:-} ]] || { echo "error: DEPLOY_KEY is not set (see .github/workflows/publish.yml)" >&2; exit 2; }
remote="git@github.com:${url#https://github.com/}.git"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$DEPLOY_KEY" > "$work/key"
chmod 600 "$work/key"
export GIT_SSH_COMMAND="ssh -i $work/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
source_commit=$(git rev-parse --short HEAD)
push() {  # push FOLDER BRANCH: the folder's files as the branch's only commit
    local tree="$work/$2"
    cp -R "$1" "$tree"
    git -C "$tree" init -q -b "$2"
    git -C "$tree" add -A
    git -C "$tree" -c user.name="publish" -c user.email="publish@localhost" \
        commit -q -m "Release of $source_commit"
    git -C "$tree" push -q --force "$remote" "$2"
}
push "$release" main
push "$release/site" gh-pages
echo "published $source_commit to $url (main, gh-pages)"
