"""The annotation web app (FastAPI + Jinja2 + htmx), over the results store.

Pages: / (my campaigns), /signin/TOKEN (one-time link; a POST consumes it), /c/NAME (resume at
the first unlabelled item), /c/NAME/i/N (item N of my queue: form, or my label to change),
/c/NAME/labels (my labels), /admin (campaigns, create, invite), /admin/c/NAME (report),
/admin/c/NAME/export (JSON Lines).

Security: every POST carries the session's CSRF token (checked before anything else); the
session cookie is signed, HttpOnly and SameSite=Strict; queues are looked up by (campaign,
signed-in annotator, position), so no URL names another person's assignment or label; model
names reach a page only after a case study is submitted; every value is autoescaped; the
Content-Security-Policy allows only this app's own script and style files; the access log
redacts sign-in tokens and logs no query strings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from itsdangerous import BadSignature, Signer
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from harness.errors import HarnessError
from judges.human import auth
from judges.human.annotations import AnnotationStore
from judges.human.entities import Annotator, Campaign
from judges.human.protocols import DIMENSIONS, OVERALL, PROTOCOLS, ROLES, FormError, parse_submission
from judges.human.views import item_view

log = logging.getLogger("judges.human.access")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
SESSION_COOKIE = "annotate_session"


def _redact(path: str) -> str:
    return "/signin/[redacted]" if path.startswith("/signin/") else path


def _templates() -> Jinja2Templates:
    env = Environment(loader=PackageLoader("judges.human", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return Jinja2Templates(env=env)


def create_app(store: str | Path | AnnotationStore, *, secure_cookies: bool = False,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app over `store`. `allowed_hosts` (e.g. the loopback names) rejects requests for
    any other Host header (DNS rebinding); `secure_cookies` marks the cookie HTTPS-only."""
    db = store if isinstance(store, AnnotationStore) else AnnotationStore(store)
    templates = _templates()
    app = FastAPI(title="medllm-harness annotation", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = db

    @app.middleware("http")
    async def headers_and_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            if k == "Cache-Control" and request.url.path.startswith("/static/"):
                continue
            response.headers.setdefault(k, v)
        log.info("%s %s %d %.1fms", request.method, _redact(request.url.path), response.status_code,
                 1000 * (time.perf_counter() - start))
        return response

    app.add_middleware(SessionMiddleware, secret_key=db.session_key(), session_cookie=SESSION_COOKIE,
                       max_age=auth.SESSION_HOURS * 3600, same_site="strict", https_only=secure_cookies)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    # When an item page was served, as a signed hidden field of its form: the time spent is
    # measured without a database write per page view.
    shown_signer = Signer(db.session_key(), salt="annotate-shown")

    def shown_field(assignment_id: int) -> str:
        return shown_signer.sign(f"{assignment_id}:{time.time():.3f}").decode()

    def shown_at(value: object, assignment_id: int) -> float | None:
        if not isinstance(value, str):
            return None
        try:
            aid, _, stamp = shown_signer.unsign(value).decode().partition(":")
        except BadSignature:
            return None
        return float(stamp) if aid == str(assignment_id) else None

    static_dir = resources.files("judges.human") / "static"
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")

    # -- helpers ------------------------------------------------------------------------

    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = auth.new_token()
            request.session["csrf"] = token
        return str(token)

    def current(request: Request) -> Annotator | None:
        return db.session_annotator(request.session.get("sid"))

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        who = context.pop("who", None) or current(request)
        response: HTMLResponse = templates.TemplateResponse(
            request, name, {"who": who, "csrf": csrf(request), "dimensions": DIMENSIONS, **context},
            status_code=status)
        return response

    async def checked_form(request: Request) -> FormData:
        """The posted form, after its CSRF token matched the session's."""
        form = await request.form()
        sent = form.get("csrf")
        if not auth.same(sent if isinstance(sent, str) else None, request.session.get("csrf")):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")
        return form

    def signed_in(request: Request) -> Annotator:
        who = current(request)
        if who is None:
            raise HTTPException(401, "sign in with your invitation link first")
        return who

    def admin(request: Request) -> Annotator:
        who = signed_in(request)
        if who.role != "admin":
            raise HTTPException(403, "this page needs the admin role")
        return who

    def campaign_for(name: str, who: Annotator) -> Campaign:
        try:
            c = db.campaign(name)
        except HarnessError:
            raise HTTPException(404, "no such campaign") from None
        if not db.can_annotate(c, who):
            raise HTTPException(404, "no such campaign")
        return c

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 401 and request.method == "GET":
            return RedirectResponse("/", status_code=303)
        name = "error_fragment.html" if request.headers.get("HX-Request") == "true" else "error.html"
        return page(request, name, exc.status_code, message=str(exc.detail))

    # -- sign in / out ------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        who = current(request)
        rows = []
        if who is not None:
            for c in db.campaigns():
                if db.can_annotate(c, who):
                    queue = db.assignments(c, who)
                    mine = db.my_labels(c, who)
                    rows.append({"name": c.name, "protocol": c.protocol_name, "total": len(queue),
                                 "done": len(mine), "started": bool(queue)})
        return page(request, "home.html", who=who, campaigns=rows)

    @app.get("/signin/{token}", response_class=HTMLResponse)
    async def signin_page(request: Request, token: str) -> Response:
        valid = db.invite_valid(token)
        return page(request, "signin.html", 200 if valid else 404, token=token if valid else "", valid=valid)

    @app.post("/signin")
    async def signin(request: Request) -> Response:
        form = await checked_form(request)
        token = form.get("token")
        got = db.redeem(token) if isinstance(token, str) and token else None
        if got is None:
            return page(request, "signin.html", 403, token="", valid=False)
        who, session_id = got
        old_sid = request.session.get("sid")
        if old_sid:
            db.end_session(old_sid)
        request.session.clear()  # a new session: new id, new CSRF token
        request.session["sid"] = session_id
        request.session["csrf"] = auth.new_token()
        return RedirectResponse("/admin" if who.role == "admin" else "/", status_code=303)

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        await checked_form(request)
        db.end_session(request.session.get("sid"))
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    # -- annotating ---------------------------------------------------------------------

    def first_open(c: Campaign, who: Annotator) -> int | None:
        queue = db.queue(c, who)
        mine = db.my_labels(c, who)
        return next((a.position for a in queue if a.assignment_id not in mine), None)

    @app.get("/c/{name}")
    async def resume(request: Request, name: str) -> Response:
        who = signed_in(request)
        c = campaign_for(name, who)
        pos = first_open(c, who)
        if pos is None:
            return RedirectResponse(f"/c/{name}/labels", status_code=303)
        return RedirectResponse(f"/c/{name}/i/{pos}", status_code=303)

    def render_item(request: Request, c: Campaign, who: Annotator, position: int, *, fragment: bool = False,
                    form: dict[str, Any] | None = None, errors: list[str] | None = None,
                    saved: bool = False) -> Response:
        queue = db.queue(c, who)
        assignment = next((a for a in queue if a.position == position), None)
        if assignment is None:
            raise HTTPException(404, "no such item in your queue")
        mine = db.my_labels(c, who)
        label = mine.get(assignment.assignment_id)
        view = item_view(c, who, db.item(assignment.item_id), assignment, label, queue, len(mine), form=form,
                         errors=errors or [])
        # a refused form keeps the original timing
        shown = str((form or {}).get("shown") or "") or shown_field(assignment.assignment_id)
        status = 400 if errors else 200
        return page(request, "item_fragment.html" if fragment else "item.html", status, who=who, v=view,
                    saved=saved, shown=shown)

    @app.get("/c/{name}/i/{position}", response_class=HTMLResponse)
    async def show_item(request: Request, name: str, position: int) -> Response:
        who = signed_in(request)
        return render_item(request, campaign_for(name, who), who, position)

    @app.post("/c/{name}/i/{position}")
    async def submit_item(request: Request, name: str, position: int) -> Response:
        form = await checked_form(request)
        who = signed_in(request)
        c = campaign_for(name, who)
        assignment = db.assignment(c, who, position)
        if assignment is None:
            raise HTTPException(404, "no such item in your queue")
        item = db.item(assignment.item_id)
        questions = c.protocol.questions(c.spec.dimensions, who.role, item.payload)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        htmx = request.headers.get("HX-Request") == "true"
        try:
            values, comment = parse_submission(c.protocol, fields, questions, assignment.display)
        except FormError as exc:
            return render_item(request, c, who, position, fragment=htmx, form=fields, errors=[str(exc)])
        db.submit(c, who, assignment, values, comment, shown_at=shown_at(form.get("shown"),
                                                                          assignment.assignment_id))
        # the case study shows who wrote what, now; otherwise on to the first open item, or to
        # my labels when none is left
        target = position if c.protocol.reveals_models else first_open(c, who)
        if target is None:
            if htmx:
                return Response(status_code=200, headers={"HX-Redirect": f"/c/{name}/labels"})
            return RedirectResponse(f"/c/{name}/labels", status_code=303)
        if htmx:
            response = render_item(request, c, who, target, fragment=True, saved=True)
            response.headers["HX-Push-Url"] = f"/c/{name}/i/{target}"
            return response
        return RedirectResponse(f"/c/{name}/i/{target}", status_code=303)

    @app.get("/c/{name}/labels", response_class=HTMLResponse)
    async def my_labels(request: Request, name: str) -> Response:
        who = signed_in(request)
        c = campaign_for(name, who)
        queue = db.queue(c, who)
        mine = db.my_labels(c, who)
        rows = []
        for a in queue:
            lab = mine.get(a.assignment_id)
            item = db.item(a.item_id)
            shown = c.protocol.shown_values(lab.values, a.display) if lab else {}
            questions = {q.field: q.label for q in c.protocol.questions(c.spec.dimensions, who.role, item.payload)}
            rows.append({"position": a.position, "done": lab is not None,
                         "given": [(questions.get(k, k), v) for k, v in shown.items()],
                         "comment": (lab.comment or "") if lab else "", "revision": lab.revision if lab else 0})
        return page(request, "labels.html", who=who, campaign=c.name, rows=rows, done=len(mine), total=len(queue))

    # -- admin --------------------------------------------------------------------------

    def admin_page(request: Request, who: Annotator, status: int = 200, **extra: Any) -> HTMLResponse:
        campaigns = [{"name": c.name, "protocol": c.protocol_name, "roles": ", ".join(c.spec.roles),
                      "dimensions": ", ".join(c.spec.dimensions), "per_item": c.spec.per_item,
                      **db.progress(c)} for c in db.campaigns()]
        runs = [{"run_key": r.run_key, "model_name": r.model_name, "run_id": r.run_id,
                 "finished_at": r.finished_at or "", "fingerprint": r.model_fingerprint}
                for r in db.store.runs() if r.run_path]
        context = {"campaigns": campaigns, "runs": runs, "protocols": PROTOCOLS.names(), "roles": ROLES,
                   "overall": OVERALL, "annotators": db.annotators(), "error": None, "invite_link": None,
                   "invitee": None, **extra}
        return page(request, "admin.html", status, who=who, **context)

    @app.get("/admin", response_class=HTMLResponse)
    async def admin_home(request: Request) -> Response:
        return admin_page(request, admin(request))

    @app.post("/admin/campaigns")
    async def admin_create(request: Request) -> Response:
        form = await checked_form(request)
        who = admin(request)
        from judges.human.annotations import create_campaign
        from judges.human.campaigns import make_spec

        paths = {r.run_key: r.run_path for r in db.store.runs() if r.run_path}
        chosen = [paths[k] for k in form.getlist("runs") if isinstance(k, str) and k in paths]

        def number(key: str) -> int | None:
            raw = form.get(key)
            if not isinstance(raw, str) or not raw.strip():
                return None
            if not raw.strip().isdigit():
                raise HarnessError(f"{key}: {raw!r} is not a whole number")
            return int(raw)

        try:
            spec = make_spec(
                str(form.get("name") or ""), [p for p in chosen if p], str(form.get("protocol") or ""),
                dimensions=[d for d in form.getlist("dimensions") if isinstance(d, str)],
                per_item=number("per_item") or 2, items_per_annotator=number("items_per_annotator"),
                limit=number("limit"))
            await run_in_threadpool(create_campaign, db, spec, created_by=who.name)
        except (HarnessError, ValueError) as exc:
            message = str(exc).splitlines()[0]
            return admin_page(request, who, 400, error=message)
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/invites")
    async def admin_invite(request: Request) -> Response:
        form = await checked_form(request)
        who = admin(request)
        try:
            invitee, token = db.invite(str(form.get("name") or ""), str(form.get("role") or ""))
        except HarnessError as exc:
            return admin_page(request, who, 400, error=str(exc))
        link = str(request.base_url).rstrip("/") + f"/signin/{token}"
        return admin_page(request, who, invite_link=link, invitee=invitee)

    def admin_campaign(name: str) -> Campaign:
        try:
            return db.campaign(name)
        except HarnessError:
            raise HTTPException(404, "no such campaign") from None

    @app.get("/admin/c/{name}", response_class=HTMLResponse)
    async def admin_report(request: Request, name: str) -> Response:
        who = admin(request)
        c = admin_campaign(name)
        from judges.human.report import campaign_report

        report = await run_in_threadpool(campaign_report, db, c.name)
        return page(request, "report.html", who=who, campaign=c, report=report)

    @app.get("/admin/c/{name}/export")
    async def admin_export(request: Request, name: str, format: str = "labels") -> Response:
        admin(request)
        c = admin_campaign(name)
        from judges.human.exports import EXPORTS, export_rows

        if format not in EXPORTS:
            raise HTTPException(400, f"format must be one of {', '.join(EXPORTS)}")
        import json

        rows = await run_in_threadpool(export_rows, db, c.name, format)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return PlainTextResponse(body, media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="{c.name}-{format}.jsonl"'})

    return app
