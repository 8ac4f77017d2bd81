#!/usr/bin/env python3
"""Extract true/false positive fixtures from gitleaks rule generators.

Reads cmd/generate/config/rules/*.go at a given tag from the gitleaks git
mirror, interprets the (small) subset of Go used by the rule functions, and
writes gitleaks-fixtures.json.

Anything depending on randomness (secrets.NewSecret, newPlausibleSecret, ...)
or on values that cannot be resolved is skipped and counted per rule.

Standard library only.
"""
import base64
import json
import re
import subprocess
import sys

# Usage: scripts/gitleaks-fixtures.py GITLEAKS_GIT_DIR OUT.json [SKIPPED.json]
# (how node/src/guard/gitleaks/fixtures.json was made from a clone of gitleaks).
REPO = sys.argv[1] if len(sys.argv) > 1 else "gitleaks"
TAG = "v8.30.1"
RULES_DIR = "cmd/generate/config/rules"
OUT = sys.argv[2] if len(sys.argv) > 2 else "gitleaks-fixtures.json"
SKIPPED_OUT = sys.argv[3] if len(sys.argv) > 3 else "/dev/null"


def git(*args):
    return subprocess.run(["git", "-C", REPO] + list(args), check=True,
                          capture_output=True).stdout


# ---------------------------------------------------------------- values

class Unknown:
    """A value that could not be resolved. reasons: set of str."""
    __slots__ = ("reasons", "spread")

    def __init__(self, reasons, spread=False):
        self.reasons = frozenset(reasons)
        self.spread = spread

    @property
    def random(self):
        return "random" in self.reasons

    def __repr__(self):
        return "Unknown(%s)" % ",".join(sorted(self.reasons))


def unk(*vals, extra=()):
    rs = set(extra)
    for v in vals:
        rs |= collect_reasons(v)
    if not rs:
        rs = {"unresolved"}
    return Unknown(rs)


def collect_reasons(v):
    if isinstance(v, Unknown):
        return set(v.reasons)
    if isinstance(v, list):
        s = set()
        for x in v:
            s |= collect_reasons(x)
        return s
    if isinstance(v, dict):
        s = set()
        for x in v.values():
            s |= collect_reasons(x)
        return s
    return set()


class Package:
    def __init__(self, path):
        self.path = path

    def __repr__(self):
        return "Package(%s)" % self.path


class Builtin:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn


class GoFunc:
    def __init__(self, name, params, body):
        self.name, self.params, self.body = name, params, body


class Struct(dict):
    def __init__(self, typ, *a, **kw):
        super().__init__(*a, **kw)
        self.typ = typ


class ReturnSignal(Exception):
    def __init__(self, value):
        self.value = value


class BreakSignal(Exception):
    pass


class ContinueSignal(Exception):
    pass


class Unresolvable(Exception):
    """Control flow depends on an unknown value."""

    def __init__(self, value):
        self.value = value


# ---------------------------------------------------------------- lexer

GO_SIMPLE_ESC = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
                 "\\": 92, "'": 39, '"': 34}


def go_unquote(lit):
    """Decode a Go string literal (raw or interpreted) into a Python str
    (bytes decoded as UTF-8 with surrogateescape)."""
    if lit[0] == "`":
        body = lit[1:-1].replace("\r", "")
        return body
    body = lit[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        e = body[i + 1]
        if e in GO_SIMPLE_ESC:
            out.append(GO_SIMPLE_ESC[e])
            i += 2
        elif e == "x":
            out.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif e in "01234567":
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        elif e == "u":
            out += chr(int(body[i + 2:i + 6], 16)).encode("utf-8")
            i += 6
        elif e == "U":
            out += chr(int(body[i + 2:i + 10], 16)).encode("utf-8")
            i += 10
        else:
            raise ValueError("bad escape \\%s in %r" % (e, lit))
    return out.decode("utf-8", "surrogateescape")


TOKEN_RE = re.compile(r"""
  (?P<nl>\n)
 |(?P<ws>[ \t\r]+)
 |(?P<lcomment>//[^\n]*)
 |(?P<bcomment>/\*.*?\*/)
 |(?P<raw>`[^`]*`)
 |(?P<str>"(?:[^"\\\n]|\\.)*")
 |(?P<rune>'(?:[^'\\\n]|\\.[^']*)')
 |(?P<num>(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
 |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
 |(?P<op>\.\.\.|:=|==|!=|<=|>=|&&|\|\||<-|\+\+|--|\+=|-=|\*=|/=|&\^|<<|>>|[-+*/%&|^<>=!()\[\]{},;.:~])
""", re.S | re.X)

KEYWORDS = {"break", "case", "chan", "const", "continue", "default", "defer",
            "else", "fallthrough", "for", "func", "go", "goto", "if",
            "import", "interface", "map", "package", "range", "return",
            "select", "struct", "switch", "type", "var"}


class Tok:
    __slots__ = ("kind", "val", "line")

    def __init__(self, kind, val, line):
        self.kind, self.val, self.line = kind, val, line

    def __repr__(self):
        return "%s:%r@%d" % (self.kind, self.val, self.line)


def lex(src):
    toks = []
    pos, line = 0, 1

    def needs_semi():
        if not toks:
            return False
        t = toks[-1]
        if t.kind in ("ident", "str", "num", "rune"):
            return True
        if t.kind == "kw" and t.val in ("break", "continue", "fallthrough",
                                         "return"):
            return True
        return t.kind == "op" and t.val in ("++", "--", ")", "]", "}")

    while pos < len(src):
        m = TOKEN_RE.match(src, pos)
        if not m:
            raise SyntaxError("lex error at line %d: %r" % (line, src[pos:pos + 30]))
        kind = m.lastgroup
        text = m.group()
        if kind == "nl" or (kind == "bcomment" and "\n" in text):
            if needs_semi():
                toks.append(Tok("op", ";", line))
        elif kind in ("ws", "lcomment", "bcomment"):
            pass
        elif kind in ("raw", "str"):
            toks.append(Tok("str", go_unquote(text), line))
        elif kind == "ident":
            toks.append(Tok("kw" if text in KEYWORDS else "ident", text, line))
        else:
            toks.append(Tok(kind, text, line))
        line += text.count("\n")
        pos = m.end()
    if needs_semi():
        toks.append(Tok("op", ";", line))
    toks.append(Tok("eof", None, line))
    return toks


# ---------------------------------------------------------------- parser
# AST nodes are tuples; first element is the node kind.

class Parser:
    def __init__(self, toks, fname):
        self.t = toks
        self.i = 0
        self.fname = fname
        self.no_composite = 0

    # helpers
    @property
    def cur(self):
        return self.t[self.i]

    def peek(self, k=1):
        return self.t[min(self.i + k, len(self.t) - 1)]

    def is_op(self, v, tok=None):
        tok = tok or self.cur
        return tok.kind == "op" and tok.val == v

    def is_kw(self, v):
        return self.cur.kind == "kw" and self.cur.val == v

    def next(self):
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect_op(self, v):
        if not self.is_op(v):
            self.error("expected %r" % v)
        return self.next()

    def accept_op(self, v):
        if self.is_op(v):
            self.i += 1
            return True
        return False

    def error(self, msg):
        raise SyntaxError("%s:%d: %s (got %r)" % (self.fname, self.cur.line,
                                                 msg, self.cur))

    def skip_semis(self):
        while self.is_op(";"):
            self.i += 1

    # top level
    def parse_file(self):
        decls = []  # ("func", name, params, body) | ("var", name, expr)
        self.skip_semis()
        if self.is_kw("package"):
            self.next()
            self.next()
        self.skip_semis()
        while self.is_kw("import"):
            self.next()
            imports = []
            if self.accept_op("("):
                while not self.is_op(")"):
                    self.skip_semis()
                    if self.is_op(")"):
                        break
                    imports.append(self.parse_import_spec())
                    self.skip_semis()
                self.expect_op(")")
            else:
                imports.append(self.parse_import_spec())
            decls.append(("imports", imports))
            self.skip_semis()
        while self.cur.kind != "eof":
            if self.is_kw("func"):
                decls.append(self.parse_func_decl())
            elif self.is_kw("var") or self.is_kw("const"):
                for name, expr in self.parse_var_decl():
                    decls.append(("var", name, expr))
            elif self.is_kw("type"):
                self.error("type declarations unsupported")
            else:
                self.error("unexpected top-level token")
            self.skip_semis()
        return decls

    def parse_import_spec(self):
        alias = None
        if self.cur.kind == "ident" or self.is_op("."):
            alias = self.next().val
        path = self.next().val
        return (alias, path)

    def parse_func_decl(self):
        self.next()  # func
        if self.is_op("("):
            self.error("methods unsupported")
        name = self.next().val
        params = self.parse_params()
        # result type(s): skip until '{'
        depth = 0
        while not (depth == 0 and self.is_op("{")):
            if self.is_op("("):
                depth += 1
            elif self.is_op(")"):
                depth -= 1
            self.next()
        body = self.parse_block()
        return ("func", name, params, body)

    def parse_params(self):
        self.expect_op("(")
        names = []
        groups = []
        while not self.is_op(")"):
            cur_names = []
            while True:
                cur_names.append(self.next().val)
                if self.accept_op(","):
                    continue
                break
            if not self.is_op(")"):
                self.parse_type()
            groups.append(cur_names)
            self.accept_op(",")
        self.expect_op(")")
        for g in groups:
            names.extend(g)
        return names

    def parse_var_decl(self):
        self.next()  # var/const
        specs = []
        if self.accept_op("("):
            while True:
                self.skip_semis()
                if self.is_op(")"):
                    break
                specs.extend(self.parse_var_spec())
            self.expect_op(")")
        else:
            specs.extend(self.parse_var_spec())
        return specs

    def parse_var_spec(self):
        names = [self.next().val]
        while self.accept_op(","):
            names.append(self.next().val)
        typ = None
        if not self.is_op("=") and not self.is_op(";") and not self.is_op(")"):
            typ = self.parse_type()
        exprs = []
        if self.accept_op("="):
            exprs = self.parse_expr_list()
        out = []
        for k, n in enumerate(names):
            if k < len(exprs):
                out.append((n, exprs[k] if len(exprs) == len(names)
                            else ("multi", exprs[0], k)))
            else:
                out.append((n, ("zero", typ)))
        return out

    # types
    def parse_type(self):
        if self.accept_op("*"):
            return ("ptr", self.parse_type())
        if self.is_op("["):
            self.next()
            if self.accept_op("]"):
                return ("slice", self.parse_type())
            if self.accept_op("..."):
                self.expect_op("]")
                return ("array", None, self.parse_type())
            n = self.parse_expr()
            self.expect_op("]")
            return ("array", n, self.parse_type())
        if self.is_kw("map"):
            self.next()
            self.expect_op("[")
            k = self.parse_type()
            self.expect_op("]")
            return ("map", k, self.parse_type())
        if self.is_kw("struct"):
            self.next()
            self.expect_op("{")
            depth = 1
            while depth:
                if self.is_op("{"):
                    depth += 1
                elif self.is_op("}"):
                    depth -= 1
                self.next()
            return ("named", "struct")
        if self.is_kw("interface"):
            self.next()
            self.expect_op("{")
            self.expect_op("}")
            return ("named", "interface{}")
        if self.is_kw("func"):
            self.next()
            self.parse_params()
            return ("named", "func")
        if self.cur.kind == "ident":
            name = self.next().val
            if self.is_op(".") and self.peek().kind == "ident":
                self.next()
                name += "." + self.next().val
            return ("named", name)
        if self.accept_op("("):
            t = self.parse_type()
            self.expect_op(")")
            return t
        self.error("expected type")

    # statements
    def parse_block(self):
        self.expect_op("{")
        saved = self.no_composite
        self.no_composite = 0
        stmts = []
        while True:
            self.skip_semis()
            if self.is_op("}"):
                break
            stmts.append(self.parse_stmt())
        self.expect_op("}")
        self.no_composite = saved
        return ("block", stmts)

    def parse_stmt(self):
        line = self.cur.line
        if self.is_kw("var") or self.is_kw("const"):
            return ("vardecl", self.parse_var_decl(), line)
        if self.is_kw("return"):
            self.next()
            if self.is_op(";") or self.is_op("}"):
                return ("return", [], line)
            return ("return", self.parse_expr_list(), line)
        if self.is_kw("for"):
            return self.parse_for()
        if self.is_kw("if"):
            return self.parse_if()
        if self.is_kw("break"):
            self.next()
            return ("break", line)
        if self.is_kw("continue"):
            self.next()
            return ("continue", line)
        if self.is_op("{"):
            return self.parse_block()
        return self.parse_simple_stmt()

    def parse_simple_stmt(self, allow_range=False):
        line = self.cur.line
        lhs = self.parse_expr_list()
        if self.cur.kind == "op" and self.cur.val in (":=", "=", "+=", "-="):
            op = self.next().val
            if allow_range and self.is_kw("range"):
                self.next()
                return ("range", lhs, op, self.parse_expr(), line)
            rhs = self.parse_expr_list()
            return ("assign", lhs, op, rhs, line)
        if self.cur.kind == "op" and self.cur.val in ("++", "--"):
            op = self.next().val
            return ("incdec", lhs[0], op, line)
        if len(lhs) != 1:
            self.error("expression list as statement")
        return ("expr", lhs[0], line)

    def parse_for(self):
        line = self.next().line
        self.no_composite += 1
        try:
            if self.is_op("{"):
                header = ("forever",)
            elif self.is_kw("range"):
                self.next()
                header = ("range", [], "=", self.parse_expr(), line)
            else:
                init = None
                if not self.is_op(";"):
                    init = self.parse_simple_stmt(allow_range=True)
                if init is not None and init[0] == "range":
                    header = init
                elif self.is_op("{"):
                    header = ("cond", init)
                else:
                    self.expect_op(";")
                    cond = None if self.is_op(";") else self.parse_expr()
                    self.expect_op(";")
                    post = None if self.is_op("{") else self.parse_simple_stmt()
                    header = ("three", init, cond, post)
        finally:
            self.no_composite -= 1
        body = self.parse_block()
        return ("for", header, body, line)

    def parse_if(self):
        line = self.next().line
        self.no_composite += 1
        try:
            init = None
            s = self.parse_simple_stmt()
            if self.accept_op(";"):
                init = s
                cond = self.parse_expr()
            else:
                if s[0] != "expr":
                    self.error("bad if condition")
                cond = s[1]
        finally:
            self.no_composite -= 1
        then = self.parse_block()
        els = None
        if self.is_kw("else"):
            self.next()
            if self.is_kw("if"):
                els = self.parse_if()
            else:
                els = self.parse_block()
        return ("if", init, cond, then, els, line)

    # expressions
    def parse_expr_list(self):
        exprs = [self.parse_expr()]
        while self.accept_op(","):
            exprs.append(self.parse_expr())
        return exprs

    BINPREC = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3,
               ">=": 3, "+": 4, "-": 4, "|": 4, "^": 4, "*": 5, "/": 5,
               "%": 5, "<<": 5, ">>": 5, "&": 5, "&^": 5}

    def parse_expr(self, prec=1):
        left = self.parse_unary()
        while self.cur.kind == "op" and self.BINPREC.get(self.cur.val, 0) >= prec:
            op = self.next().val
            right = self.parse_expr(self.BINPREC[op] + 1)
            left = ("binop", op, left, right)
        return left

    def parse_unary(self):
        if self.cur.kind == "op" and self.cur.val in ("-", "+", "!", "^", "&", "*", "<-"):
            op = self.next().val
            return ("unop", op, self.parse_unary())
        return self.parse_primary()

    def parse_operand(self):
        tok = self.cur
        if tok.kind == "str":
            self.next()
            return ("lit", tok.val)
        if tok.kind == "num":
            self.next()
            v = tok.val.replace("_", "")
            if v.lower().startswith("0x"):
                return ("lit", int(v, 16))
            return ("lit", float(v) if any(c in v for c in ".eE") else int(v))
        if tok.kind == "rune":
            self.next()
            return ("lit", ord(go_unquote('"' + tok.val[1:-1] + '"')))
        if self.is_op("("):
            self.next()
            saved = self.no_composite
            self.no_composite = 0
            e = self.parse_expr()
            self.no_composite = saved
            self.expect_op(")")
            return ("paren", e)
        if self.is_kw("func"):
            self.next()
            params = self.parse_params()
            while not self.is_op("{"):
                self.next()
            body = self.parse_block()
            return ("funclit", params, body)
        if self.is_op("[") or self.is_kw("map") or self.is_kw("struct"):
            typ = self.parse_type()
            if self.is_op("{"):
                return self.parse_composite(typ)
            return ("type", typ)
        if tok.kind == "ident":
            self.next()
            return ("ident", tok.val)
        self.error("unexpected token in expression")

    def parse_primary(self):
        e = self.parse_operand()
        while True:
            if self.is_op("."):
                self.next()
                if self.accept_op("("):  # type assertion
                    self.parse_type()
                    self.expect_op(")")
                    continue
                e = ("sel", e, self.next().val)
            elif self.is_op("("):
                self.next()
                saved = self.no_composite
                self.no_composite = 0
                args, ell = [], False
                while not self.is_op(")"):
                    self.skip_semis()
                    if self.is_op(")"):
                        break
                    if e[0] == "ident" and e[1] in ("make", "new") and not args:
                        args.append(("type", self.parse_type()))
                    else:
                        args.append(self.parse_expr())
                    if self.accept_op("..."):
                        ell = True
                    if not self.accept_op(","):
                        self.skip_semis()
                        break
                self.skip_semis()
                self.expect_op(")")
                self.no_composite = saved
                e = ("call", e, args, ell)
            elif self.is_op("["):
                self.next()
                lo = None if self.is_op(":") else self.parse_expr()
                if self.accept_op(":"):
                    hi = None if self.is_op("]") else self.parse_expr()
                    self.expect_op("]")
                    e = ("slice_expr", e, lo, hi)
                else:
                    self.expect_op("]")
                    e = ("index", e, lo)
            elif self.is_op("{") and not self.no_composite and self._is_type_expr(e):
                e = self.parse_composite(self._expr_to_type(e))
            else:
                return e

    @staticmethod
    def _is_type_expr(e):
        return e[0] == "ident" or (e[0] == "sel" and e[1][0] == "ident")

    @staticmethod
    def _expr_to_type(e):
        if e[0] == "ident":
            return ("named", e[1])
        return ("named", e[1][1] + "." + e[2])

    def parse_composite(self, typ):
        self.expect_op("{")
        saved = self.no_composite
        self.no_composite = 0
        elems = []
        while True:
            self.skip_semis()
            if self.is_op("}"):
                break
            k = self.parse_elem()
            v = None
            if self.accept_op(":"):
                v = self.parse_elem()
                elems.append((k, v))
            else:
                elems.append((None, k))
            self.skip_semis()
            if not self.accept_op(","):
                self.skip_semis()
                break
        self.skip_semis()
        self.expect_op("}")
        self.no_composite = saved
        return ("composite", typ, elems)

    def parse_elem(self):
        if self.is_op("{"):
            return self.parse_composite(None)  # elided type
        if self.is_op("&") and self.peek().kind == "op" and self.peek().val == "{":
            self.next()
            return self.parse_composite(None)
        return self.parse_expr()


# ---------------------------------------------------------------- helpers
# Python ports of the deterministic Go helpers in cmd/generate/config/utils.

def py_generate_sample_secret(identifier, secret):
    return '%s_api_token = "%s"' % (identifier, secret)


def load_sample_templates():
    """Parse the `samples := map[string]string{...}` literal from
    utils/generate.go so the variants are taken from the source itself."""
    src = git("show", "%s:cmd/generate/config/utils/generate.go" % TAG).decode()
    fn = src[src.index("func GenerateSampleSecrets("):]
    start = fn.index("samples := map[string]string{")
    toks = lex(fn[start:])
    p = Parser(toks, "generate.go")
    stmt = p.parse_simple_stmt()
    comp = stmt[3][0]
    assert comp[0] == "composite"
    templates = []
    for k, v in comp[2]:
        templates.append((k[1], v[1]))
    # sanity check: the replacer must be exactly {i}, {I}, {s}
    assert '"{i}", identifier' in fn and '"{I}", strings.ToUpper(identifier)' in fn \
        and '"{s}", secret' in fn, "GenerateSampleSecrets replacer changed"
    return templates


SAMPLE_TEMPLATES = None


def go_to_upper(s):
    # strings.ToUpper: Unicode upper-casing; identical to str.upper for the
    # ASCII identifiers used here.
    return s.upper()


def py_generate_sample_secrets(identifier, secret):
    repl = {"{i}": identifier, "{I}": go_to_upper(identifier), "{s}": secret}
    pat = re.compile(r"\{i\}|\{I\}|\{s\}")
    return [pat.sub(lambda m: repl[m.group()], tmpl) for _, tmpl in SAMPLE_TEMPLATES]


def go_sprintf(fmt, args):
    out = []
    i = 0
    ai = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        m = re.match(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([svdqxXf%])", fmt[i:])
        if not m:
            raise Unresolvable(unk(extra={"unresolved"}))
        flags, width, prec, verb = m.groups()
        i += m.end()
        if verb == "%":
            out.append("%")
            continue
        a = args[ai]
        ai += 1
        if verb in "sv":
            s = a if isinstance(a, str) else str(a)
        elif verb == "d":
            s = str(int(a))
        elif verb == "q":
            s = json.dumps(a)
        elif verb in "xX":
            s = (a.encode("utf-8", "surrogateescape").hex() if isinstance(a, str)
                 else format(a, "x"))
            if verb == "X":
                s = s.upper()
        else:
            s = ("%" + flags + width + ("." + prec if prec else "") + "f") % a
            width = ""
        if width:
            s = s.rjust(int(width)) if "-" not in flags else s.ljust(int(width))
        out.append(s)
    return "".join(out)


def to_bytes(s):
    if isinstance(s, (bytes, bytearray)):
        return bytes(s)
    return s.encode("utf-8", "surrogateescape")


def b64(kind):
    def enc(s):
        b = to_bytes(s)
        if kind == "Std":
            r = base64.b64encode(b)
        elif kind == "RawStd":
            r = base64.b64encode(b).rstrip(b"=")
        elif kind == "URL":
            r = base64.urlsafe_b64encode(b)
        else:
            r = base64.urlsafe_b64encode(b).rstrip(b"=")
        return r.decode("ascii")
    return enc


def pattern_fn(fmtstr):
    return lambda size: fmtstr % size


# secret regex helpers: deterministic (they return regex text, not secrets)
UTILS_PATTERNS = {
    "Numeric": pattern_fn("[0-9]{%s}"),
    "Hex": pattern_fn("[a-f0-9]{%s}"),
    "AlphaNumeric": pattern_fn("[a-z0-9]{%s}"),
    "AlphaNumericExtendedShort": pattern_fn("[a-z0-9_-]{%s}"),
    "AlphaNumericExtended": pattern_fn(r"[a-z0-9=_\-]{%s}"),
    "AlphaNumericExtendedLong": pattern_fn(r"[a-z0-9\/=_\+\-]{%s}"),
    "Hex8_4_4_4_12": lambda: "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
}


# ---------------------------------------------------------------- interpreter

class Env:
    def __init__(self, parent=None):
        self.vars = {}
        self.parent = parent

    def lookup(self, name):
        e = self
        while e is not None:
            if name in e.vars:
                return e.vars[name], e
            e = e.parent
        raise KeyError(name)

    def set(self, name, value):
        _, e = self.lookup(name)
        e.vars[name] = value

    def define(self, name, value):
        self.vars[name] = value


class Interp:
    def __init__(self):
        self.globals = Env()
        self.global_decls = {}    # name -> expr (lazily evaluated)
        self.global_state = {}    # name -> "evaluating" | "done"
        self.funcs = {}
        self.imports = {}         # alias -> package path (union over files)
        self.validations = []     # (rule_id, kind, tps, fps, func_name)
        self.current_func = None
        self.unresolved_notes = []

    # ----- loading
    def load_file(self, fname, src):
        decls = Parser(lex(src), fname).parse_file()
        for d in decls:
            if d[0] == "imports":
                for alias, path in d[1]:
                    name = alias or path.rsplit("/", 1)[-1]
                    self.imports[name] = path
            elif d[0] == "func":
                _, name, params, body = d
                self.funcs[name] = (fname, GoFunc(name, params, body))
            elif d[0] == "var":
                self.global_decls[d[1]] = d[2]

    def global_lookup(self, name):
        if name in self.global_state:
            if self.global_state[name] == "evaluating":
                raise RuntimeError("initialisation cycle on " + name)
            return self.globals.vars[name]
        if name in self.global_decls:
            self.global_state[name] = "evaluating"
            v = self.eval(self.global_decls[name], self.globals)
            self.globals.vars[name] = v
            self.global_state[name] = "done"
            return v
        if name in self.funcs:
            return self.funcs[name][1]
        if name in self.imports:
            return Package(self.imports[name])
        if name in BUILTINS:
            return Builtin(name, BUILTINS[name])
        if name in ("true", "false"):
            return name == "true"
        if name == "nil":
            return None
        if name in ("string", "byte", "int", "float64", "rune", "bool"):
            return ("typeconv", name)
        return unk(extra={"unresolved"})

    def lookup(self, name, env):
        try:
            v, _ = env.lookup(name)
            return v
        except KeyError:
            return self.global_lookup(name)

    # ----- statements
    def exec_block(self, block, env):
        local = Env(env)
        for st in block[1]:
            self.exec_stmt(st, local)

    def exec_stmt(self, st, env):
        k = st[0]
        if k == "block":
            self.exec_block(st, env)
        elif k == "vardecl":
            for name, expr in st[1]:
                if expr[0] == "multi":
                    v = self.eval(expr[1], env)
                    v = v[expr[2]] if isinstance(v, tuple) else unk(v)
                else:
                    v = self.eval(expr, env)
                env.define(name, v)
        elif k == "assign":
            _, lhs, op, rhs, _line = st
            if len(rhs) == 1 and len(lhs) > 1:
                v = self.eval(rhs[0], env)
                vals = list(v) if isinstance(v, tuple) else [unk(v)] * len(lhs)
            else:
                vals = [self.eval(e, env) for e in rhs]
            for target, v in zip(lhs, vals):
                if op == "+=":
                    v = self.binop("+", self.eval(target, env), v)
                elif op == "-=":
                    v = self.binop("-", self.eval(target, env), v)
                self.assign(target, v, env, define=(op == ":="))
        elif k == "incdec":
            v = self.eval(st[1], env)
            self.assign(st[1], self.binop("+" if st[2] == "++" else "-", v, 1), env)
        elif k == "expr":
            self.eval(st[1], env)
        elif k == "return":
            vals = [self.eval(e, env) for e in st[1]]
            raise ReturnSignal(vals[0] if len(vals) == 1 else tuple(vals))
        elif k == "break":
            raise BreakSignal()
        elif k == "continue":
            raise ContinueSignal()
        elif k == "if":
            _, init, cond, then, els, _line = st
            local = Env(env)
            if init is not None:
                self.exec_stmt(init, local)
            c = self.eval(cond, local)
            if isinstance(c, Unknown):
                raise Unresolvable(c)
            if c:
                self.exec_block(then, local)
            elif els is not None:
                self.exec_stmt(els, local)
        elif k == "for":
            self.exec_for(st, env)
        else:
            raise NotImplementedError(k)

    def exec_for(self, st, env):
        _, header, body, _line = st
        local = Env(env)
        guard = 0

        def run_body():
            try:
                self.exec_block(body, local)
            except ContinueSignal:
                pass

        try:
            if header[0] == "range":
                _, lhs, op, expr, _ = header
                coll = self.eval(expr, local)
                if isinstance(coll, Unknown):
                    raise Unresolvable(coll)
                if isinstance(coll, dict):
                    items = list(coll.items())  # source order (Go: random)
                elif isinstance(coll, (list, str)):
                    items = list(enumerate(coll))
                elif isinstance(coll, int):
                    items = [(i, None) for i in range(coll)]
                else:
                    raise Unresolvable(unk())
                for key, val in items:
                    if len(lhs) >= 1:
                        self.assign(lhs[0], key, local, define=(op == ":="))
                    if len(lhs) >= 2:
                        self.assign(lhs[1], val, local, define=(op == ":="))
                    run_body()
            elif header[0] == "forever":
                while True:
                    guard += 1
                    if guard > 100000:
                        raise Unresolvable(unk(extra={"unresolved"}))
                    run_body()
            elif header[0] == "cond":
                while True:
                    c = self.eval(header[1][1], local)
                    if isinstance(c, Unknown):
                        raise Unresolvable(c)
                    if not c:
                        break
                    run_body()
            else:
                _, init, cond, post = header
                if init is not None:
                    self.exec_stmt(init, local)
                while True:
                    if cond is not None:
                        c = self.eval(cond, local)
                        if isinstance(c, Unknown):
                            raise Unresolvable(c)
                        if not c:
                            break
                    run_body()
                    if post is not None:
                        self.exec_stmt(post, local)
        except BreakSignal:
            pass

    def assign(self, target, value, env, define=False):
        if target[0] == "ident":
            name = target[1]
            if name == "_":
                return
            if define:
                env.define(name, value)
            else:
                try:
                    env.set(name, value)
                except KeyError:
                    self.globals.vars[name] = value
                    self.global_state[name] = "done"
        elif target[0] == "sel":
            obj = self.eval(target[1], env)
            if isinstance(obj, dict):
                obj[target[2]] = value
        elif target[0] == "index":
            obj = self.eval(target[1], env)
            idx = self.eval(target[2], env)
            if isinstance(obj, (dict, list)) and not isinstance(idx, Unknown):
                obj[idx] = value
        elif target[0] == "unop" and target[1] == "*":
            pass
        else:
            raise NotImplementedError("assign to %r" % (target,))

    # ----- expressions
    def eval(self, e, env):
        k = e[0]
        if k == "lit":
            return e[1]
        if k == "ident":
            return self.lookup(e[1], env)
        if k == "paren":
            return self.eval(e[1], env)
        if k == "zero":
            t = e[1]
            if t and t[0] == "slice":
                return []
            if t and t[0] == "map":
                return {}
            if t == ("named", "string"):
                return ""
            if t and t[0] == "named" and t[1] in ("int", "float64"):
                return 0
            return None
        if k == "binop":
            op = e[1]
            if op in ("&&", "||"):
                left = self.eval(e[2], env)
                if isinstance(left, Unknown):
                    return unk(left)
                if op == "&&" and not left:
                    return False
                if op == "||" and left:
                    return True
                return self.eval(e[3], env)
            return self.binop(op, self.eval(e[2], env), self.eval(e[3], env))
        if k == "unop":
            v = self.eval(e[2], env)
            op = e[1]
            if op == "&":
                return v
            if isinstance(v, Unknown):
                return unk(v)
            if op == "!":
                return not v
            if op == "-":
                return -v
            if op == "+":
                return v
            return unk(v)
        if k == "sel":
            obj = self.eval(e[1], env)
            if isinstance(obj, Package):
                return self.pkg_member(obj, e[2])
            if isinstance(obj, Builtin):
                return self.builtin_member(obj, e[2])
            if isinstance(obj, dict) and e[2] in obj:
                return obj[e[2]]
            return unk(obj, extra={"unresolved"})
        if k == "index":
            obj = self.eval(e[1], env)
            idx = self.eval(e[2], env)
            if isinstance(obj, Unknown) or isinstance(idx, Unknown):
                return unk(obj, idx)
            try:
                v = obj[idx]
            except (KeyError, IndexError, TypeError):
                return unk(extra={"unresolved"})
            if isinstance(obj, str):
                return ord(v) if len(v) == 1 and ord(v) < 128 else v
            return v
        if k == "slice_expr":
            obj = self.eval(e[1], env)
            lo = self.eval(e[2], env) if e[2] is not None else None
            hi = self.eval(e[3], env) if e[3] is not None else None
            if any(isinstance(x, Unknown) for x in (obj, lo, hi)):
                return unk(obj, lo, hi)
            return obj[lo:hi]
        if k == "composite":
            return self.eval_composite(e[1], e[2], env)
        if k == "call":
            return self.eval_call(e, env)
        if k == "type":
            return ("typeconv", e[1])
        if k == "funclit":
            return GoFunc("<lit>", e[1], e[2])
        raise NotImplementedError(k)

    def binop(self, op, a, b):
        if isinstance(a, Unknown) or isinstance(b, Unknown):
            return unk(a, b)
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a // b if isinstance(a, int) and isinstance(b, int) else a / b
            if op == "%":
                return a % b
            if op == "==":
                return a == b
            if op == "!=":
                return a != b
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            if op == ">":
                return a > b
            if op == ">=":
                return a >= b
        except TypeError:
            pass
        return unk(a, b, extra={"unresolved"})

    def eval_composite(self, typ, elems, env):
        base = typ
        while base is not None and base[0] == "ptr":
            base = base[1]
        if base is None:
            # elided type: decide from shape
            if elems and all(k is not None and k[0] == "ident" for k, _ in elems):
                base = ("named", "?struct")
            elif elems and all(k is not None for k, _ in elems):
                base = ("map", None, None)
            else:
                base = ("slice", None)
        if base[0] in ("slice", "array"):
            elem_t = base[-1]
            out = []
            for k, v in elems:
                out.append(self.eval_elem(v, elem_t, env))
            return out
        if base[0] == "map":
            out = {}
            for k, v in elems:
                kv = self.eval_elem(k, base[1], env)
                if isinstance(kv, Unknown):
                    kv = ("<unknown-key>", len(out))
                out[kv] = self.eval_elem(v, base[2], env)
            return out
        # struct
        out = Struct(base[1])
        for k, v in elems:
            name = k[1] if k is not None and k[0] == "ident" else str(len(out))
            try:
                out[name] = self.eval_elem(v, None, env)
            except Unresolvable as ex:
                out[name] = ex.value
        return out

    def eval_elem(self, e, typ, env):
        if e is None:
            return None
        if e[0] == "composite" and e[1] is None:
            return self.eval_composite(typ, e[2], env)
        return self.eval(e, env)

    def pkg_member(self, pkg, name):
        key = pkg.path.rsplit("/", 1)[-1] + "." + name
        if pkg.path == "encoding/base64":
            key = "base64." + name
        if key in PKG_FUNCS:
            return Builtin(key, PKG_FUNCS[key])
        if pkg.path.endswith("cmd/generate/config/utils") and name in UTILS_PATTERNS:
            return Builtin(key, UTILS_PATTERNS[name])
        if key in RANDOM_FUNCS:
            return Builtin(key, lambda *a: unk(*a, extra={"random"}))
        return Builtin(key, None)  # unknown function

    def builtin_member(self, obj, name):
        key = obj.name + "." + name
        if key in PKG_FUNCS:
            return Builtin(key, PKG_FUNCS[key])
        return Builtin(key, None)

    def eval_call(self, e, env):
        _, fexpr, argexprs, ell = e
        fn = self.eval(fexpr, env)
        # conversions
        if isinstance(fn, tuple) and fn and fn[0] == "typeconv":
            v = self.eval(argexprs[0], env)
            return v
        args = [self.eval(a, env) for a in argexprs]
        if isinstance(fn, Builtin) and fn.name == "append":
            base = args[0] if args[0] is not None else []
            if isinstance(base, Unknown):
                base = [Unknown(base.reasons, spread=True)]
            out = list(base)
            rest = args[1:]
            if ell:
                last = rest[-1]
                if isinstance(last, Unknown):
                    rest = rest[:-1] + [Unknown(last.reasons, spread=True)]
                    out.extend(rest)
                else:
                    out.extend(rest[:-1])
                    out.extend(last or [])
            else:
                out.extend(rest)
            return out
        if ell and args and isinstance(args[-1], list):
            args = args[:-1] + list(args[-1])
        if isinstance(fn, Builtin):
            if fn.name in ("utils.Validate", "utils.ValidateWithPaths"):
                return self.record_validation(fn.name, args)
            if fn.fn is None:
                return unk(*args, extra={"unresolved"})
            if fn.name in PASS_UNKNOWN:
                return fn.fn(*args)
            if any(isinstance(a, Unknown) for a in args):
                return self.unknown_result(fn.name, args)
            try:
                return fn.fn(*args)
            except Unresolvable as ex:
                return ex.value
        if isinstance(fn, GoFunc):
            return self.call_func(fn, args)
        return unk(fn, *args, extra={"unresolved"})

    def unknown_result(self, name, args):
        u = unk(*args)
        if name == "utils.GenerateSampleSecrets":
            return [Unknown(u.reasons) for _ in SAMPLE_TEMPLATES]
        return u

    def call_func(self, fn, args):
        env = Env(self.globals)
        for p, a in zip(fn.params, args):
            env.define(p, a)
        try:
            self.exec_block(fn.body, env)
        except ReturnSignal as r:
            return r.value
        except Unresolvable as ex:
            return unk(ex.value)
        return None

    def record_validation(self, name, args):
        r = args[0]
        tps = args[1] if len(args) > 1 else None
        fps = args[2] if len(args) > 2 else None
        rule_id = r.get("RuleID") if isinstance(r, dict) else None
        self.validations.append((rule_id, name, tps, fps, self.current_func))
        return r


def b_len(x):
    return len(x)


def b_make(t, *a):
    if t[1][0] == "slice":
        return []
    if t[1][0] == "map":
        return {}
    return None


BUILTINS = {
    "append": None,  # handled specially
    "len": b_len,
    "make": b_make,
}

PKG_FUNCS = {
    "utils.GenerateSampleSecret": py_generate_sample_secret,
    "utils.GenerateSampleSecrets": py_generate_sample_secrets,
    "fmt.Sprintf": lambda f, *a: go_sprintf(f, a),
    "strings.ToUpper": go_to_upper,
    "strings.ToLower": lambda s: s.lower(),
    "strings.Repeat": lambda s, n: s * n,
    "strings.Join": lambda xs, sep: sep.join(xs),
    "base64.StdEncoding.EncodeToString": b64("Std"),
    "base64.RawStdEncoding.EncodeToString": b64("RawStd"),
    "base64.URLEncoding.EncodeToString": b64("URL"),
    "base64.RawURLEncoding.EncodeToString": b64("RawURL"),
    "base64.StdEncoding": None,
    "base64.RawStdEncoding": None,
    "base64.URLEncoding": None,
    "base64.RawURLEncoding": None,
}
# Functions whose result is random (value generators).
RANDOM_FUNCS = {"secrets.NewSecret"}
PASS_UNKNOWN = set()


# ---------------------------------------------------------------- driver

def is_rule_func(fname, fn):
    return not fn.params


def flatten_fixture_list(v):
    """Return (strings, skipped_items) for a tps/fps value (list or None)."""
    if v is None:
        return [], []
    if isinstance(v, Unknown):
        return [], [v]
    out, skipped = [], []
    for x in v:
        if isinstance(x, str):
            out.append(x)
        else:
            skipped.append(x if isinstance(x, Unknown) else unk(extra={"unresolved"}))
    return out, skipped


def main():
    global SAMPLE_TEMPLATES
    SAMPLE_TEMPLATES = load_sample_templates()
    assert len(SAMPLE_TEMPLATES) == 26, len(SAMPLE_TEMPLATES)

    interp = Interp()
    files = git("ls-tree", "--name-only", "%s:%s" % (TAG, RULES_DIR)).decode().split()
    for f in sorted(files):
        if not f.endswith(".go") or f.endswith("_test.go"):
            continue
        src = git("show", "%s:%s/%s" % (TAG, RULES_DIR, f)).decode()
        interp.load_file(f, src)

    rule_funcs = []
    for name, (fname, fn) in interp.funcs.items():
        if not is_rule_func(fname, fn):
            continue
        # only functions declared as returning *config.Rule
        rule_funcs.append((fname, name, fn))

    no_validation = []
    for fname, name, fn in rule_funcs:
        interp.current_func = name
        n_before = len(interp.validations)
        result = interp.call_func(fn, [])
        if len(interp.validations) == n_before and isinstance(result, dict) \
                and "RuleID" in result:
            no_validation.append((result.get("RuleID"), name))

    rules = {}
    skipped = {}
    dup_count = [0]
    for rule_id, kind, tps, fps, func in interp.validations:
        if not isinstance(rule_id, str):
            print("WARNING: %s: could not resolve RuleID" % func, file=sys.stderr)
            continue
        entry = rules.setdefault(rule_id, {"tps": [], "fps": []})
        sk = skipped.setdefault(rule_id, {"function": func,
                                          "tps_random": 0, "fps_random": 0,
                                          "tps_unresolved": 0, "fps_unresolved": 0})
        if kind == "utils.ValidateWithPaths":
            for which, m in (("tps", tps), ("fps", fps)):
                paths_key = "tp_paths" if which == "tps" else "fp_paths"
                entry.setdefault(paths_key, [])
                for path, content in (m or {}).items():
                    if isinstance(content, str) and isinstance(path, str):
                        entry[which].append(content)
                        entry[paths_key].append(path)
                    else:
                        r = "random" if collect_reasons(content) & {"random"} else "unresolved"
                        sk["%s_%s" % (which, r)] += 1
            continue
        for which, v in (("tps", tps), ("fps", fps)):
            good, bad = flatten_fixture_list(v)
            for g in good:
                if g not in entry[which]:
                    entry[which].append(g)
                else:
                    dup_count[0] += 1
            for b in bad:
                r = "random" if b.random else "unresolved"
                sk["%s_%s" % (which, r)] += 1
                if b.spread:
                    sk.setdefault("notes", []).append(
                        "%s: spread of unresolvable slice counted as 1" % which)

    for rid, e in rules.items():
        for s in e["tps"] + e["fps"] + e.get("tp_paths", []) + e.get("fp_paths", []):
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise SystemExit("non-UTF-8 fixture in %s: %r" % (rid, s))

    # rules whose every fixture depends on randomness carry no fixtures
    empty = [rid for rid, e in rules.items() if not e["tps"] and not e["fps"]]
    for rid in empty:
        del rules[rid]
    doc = {"source": "gitleaks %s cmd/generate/config/rules" % TAG, "rules": rules}
    with open(OUT, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    skipped_doc = {
        "skipped": {k: v for k, v in skipped.items()
                    if any(v[x] for x in ("tps_random", "fps_random",
                                          "tps_unresolved", "fps_unresolved"))},
        "rules_without_validation": [{"rule_id": r, "function": f}
                                     for r, f in no_validation],
        "rules_without_fixtures": empty,
        "duplicates_dropped": dup_count[0],
    }
    with open(SKIPPED_OUT, "w", encoding="utf-8") as fh:
        json.dump(skipped_doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")

    n_tp = sum(len(e["tps"]) for e in rules.values())
    n_fp = sum(len(e["fps"]) for e in rules.values())
    print("rules: %d  tps: %d  fps: %d" % (len(rules), n_tp, n_fp))
    tot = {k: sum(v[k] for v in skipped.values())
           for k in ("tps_random", "fps_random", "tps_unresolved", "fps_unresolved")}
    print("skipped:", tot)
    print("rules without validation:", no_validation)
    print("rules dropped (no resolvable fixtures): %d" % len(empty))
    print("duplicate fixtures dropped: %d" % dup_count[0])


if __name__ == "__main__":
    main()
