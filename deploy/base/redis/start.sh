#!/bin/sh
# Start the Redis server with Ferry's users (users.acl, beside this script). Each user's password
# comes from the environment: REDIS_PASSWORD_<NAME> for ferry-<name> (upper case, - as _), e.g.
# REDIS_PASSWORD_GATE_EVALUATOR for ferry-gate-evaluator; a user without one stays off. Use
# URL-safe passwords (e.g. `openssl rand -hex 24`): workers put them in FERRY_REDIS_URL.
# The ACL file written for the server holds the passwords: it is private to the server's user.
# Arguments go to the server; REDIS_SERVER names its binary (default redis-server).
set -eu
here=$(dirname "$0")
out=${FERRY_ACL_FILE:-${TMPDIR:-/tmp}/ferry-users-$$.acl}  # $$: the server's pid, after exec
umask 077
: >"$out"
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    "" | "#"*) continue ;;
    "user ferry-"*)
      name=${line#user }
      name=${name%% *}
      rules=${line#"user $name "}
      var=REDIS_PASSWORD_$(printf '%s' "${name#ferry-}" | tr 'a-z-' 'A-Z_')
      eval "password=\${$var:-}"
      case "$password" in
        "") line="user $name off $rules" ;;
        *[!A-Za-z0-9._~-]*)
          echo "start.sh: $var must be URL-safe (letters, digits, . _ ~ -)" >&2
          exit 2
          ;;
        *) line="user $name on >$password $rules" ;;
      esac
      ;;
  esac
  printf '%s\n' "$line" >>"$out"
done <"$here/users.acl"
exec "${REDIS_SERVER:-redis-server}" "$@" --aclfile "$out"
