"""The site console: server-rendered pages for the people on site, behind local accounts.

    accounts.py     the accounts file, roles and what each may do, argon2 password hashes
    keyfile.py      the console's folder beside the buffer and its 0600 session key
    sessions.py     signed session cookies, CSRF tokens, the login rate limit
    health_view.py  the status as people read it: root cause first, times in the site's zone
    punch_query.py  read-only search of the buffer's punches
    i18n.py         English and Chinese UI text, chosen by Accept-Language
    web.py          the routes table: every page, the permission it needs; the static files
    state.py        Console: what the handlers share, built once per server
    assets.py       the template environment and the static files (templates/, static/)
    render.py       a page's template values and security headers
    access.py       sessions, permissions and CSRF tokens around every handler
    pages_*.py      the pages, one module each: signin, overview (and a terminal), commands
                    (an admin's remote commands), punches, manual (make-up punches), exports,
                    audit, accounts

Nothing here is imported until the HTTP server or `punchgate user` needs it, except
`health_view`, which `punchgate status` uses too and which imports no web library.
See docs/console.md.
"""
