//! Criterion benchmarks of authorization decisions (issue 4), one `Policy::evaluate` each, on a
//! prepared `PolicyContext` (what the guard does per request, minus the request plumbing).
//!
//! - `rbac/has_role_3_levels`: `has_role("reader")` for an admin, through admin ⊇ editor ⊇
//!   reader (target ≤ 100 ns);
//! - `abac/all_of_10_rules`: `all_of` of ten `abac::rule` conditions over claims, subject,
//!   tenant, path parameters, method, route and client network, all holding (target ≤ 1 µs);
//! - `cedar/20_policies_allow` and `cedar/20_policies_deny`: a `CedarPolicy` with 20 policies
//!   (parsed and validated once, at build) deciding an admin's `GET /tenants/{tenant}/items/{id}`
//!   and an anonymous caller's `DELETE` of the same route; this includes building the Cedar
//!   entities, context and request from the `PolicyContext`.
//!
//! Run with `cargo bench --features full --bench authz -- --warm-up-time 1 --measurement-time 3`;
//! see `docs/benchmarks.md`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::hint::black_box;

use criterion::Criterion;
use http::Method;
use portcullis::authz::abac::{Condition, Operand, claim, literal, param, rule, subject, tenant};
use portcullis::authz::cedar::CedarPolicy;
use portcullis::authz::{Policy, PolicyContext, Rbac, all_of, has_role};
use portcullis::principal::{AuthMethod, Principal};
use serde_json::json;

const ROUTE: &str = "/tenants/{tenant}/items/{id}";

fn rbac() -> Rbac {
    Rbac::builder()
        .inherit("admin", "editor")
        .inherit("editor", "reader")
        .build()
        .unwrap()
}

fn alice() -> Principal {
    Principal::builder("alice", AuthMethod::Other("bench".into()))
        .roles(["admin"])
        .scopes(["items:read", "items:write"])
        .tenant("acme")
        .attribute("tenant", "acme")
        .attribute("groups", json!(["ops", "dev"]))
        .attribute("org", json!({"id": 7}))
        .attribute("level", "gold")
        .build()
}

fn bench_rbac(c: &mut Criterion) {
    let rbac = rbac();
    let admin = alice();
    let policy = has_role("reader");
    let ctx = PolicyContext::new(&Method::GET, ROUTE)
        .with_principal(Some(&admin))
        .with_rbac(&rbac);
    assert!(policy.evaluate(&ctx).is_allow());
    c.bench_function("rbac/has_role_3_levels", |b| {
        b.iter(|| black_box(&policy).evaluate(black_box(&ctx)))
    });
}

fn bench_abac(c: &mut Criterion) {
    let principal = alice();
    let params = [("tenant", "acme"), ("id", "42")];
    let policy = all_of([
        rule("same-tenant", claim("tenant").eq(param("tenant"))),
        rule("subject", subject().eq(literal("alice"))),
        rule("read-methods", Operand::Method.one_of(["GET", "HEAD"])),
        rule("route", Operand::Route.eq(literal(ROUTE))),
        rule(
            "office-network",
            Condition::client_ip_in(["10.0.0.0/8", "192.168.0.0/16"]).unwrap(),
        ),
        rule("ops-group", claim("groups").contains(literal("ops"))),
        rule("org", claim("org.id").eq(literal(7))),
        rule("has-tenant", tenant().exists()),
        rule("real-item", param("id").ne(literal("0"))),
        rule("level", claim("level").one_of(["gold", "platinum"])),
    ]);
    let ctx = PolicyContext::new(&Method::GET, ROUTE)
        .with_principal(Some(&principal))
        .with_params(&params)
        .with_client_ip(Some("10.1.2.3".parse().unwrap()));
    assert!(policy.evaluate(&ctx).is_allow());
    c.bench_function("abac/all_of_10_rules", |b| {
        b.iter(|| black_box(&policy).evaluate(black_box(&ctx)))
    });
}

const SCHEMA: &str = r#"
namespace Bench {
  entity Role;
  entity User in [Role];
  entity Anonymous;
  entity Route;
  type Ctx = { authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr };
  type ItemCtx = {
    authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr,
    params: { tenant: String, id: String },
  };
  action "read", "write";
  type TenantCtx = {
    authenticated: Bool, scopes: Set<String>, client_ip?: ipaddr, params: { tenant: String },
  };
  action "GET /health", "GET /me"
    appliesTo { principal: [User, Anonymous], resource: Route, context: Ctx };
  action "POST /tenants/{tenant}/items"
    appliesTo { principal: [User, Anonymous], resource: Route, context: TenantCtx };
  action "GET /tenants/{tenant}/items/{id}" in ["read"]
    appliesTo { principal: [User, Anonymous], resource: Route, context: ItemCtx };
  action "PUT /tenants/{tenant}/items/{id}", "DELETE /tenants/{tenant}/items/{id}" in ["write"]
    appliesTo { principal: [User, Anonymous], resource: Route, context: ItemCtx };
}
"#;

/// Twenty policies: permits by role, scope, network and parameter, and forbids that do not
/// fire for the benchmarked requests.
fn cedar_policies() -> String {
    let mut policies = String::from(
        r#"
        permit(principal, action == Bench::Action::"GET /health", resource);
        permit(principal is Bench::User, action == Bench::Action::"GET /me", resource);
        permit(principal in Bench::Role::"reader", action in Bench::Action::"read", resource);
        permit(principal in Bench::Role::"editor", action in Bench::Action::"write", resource)
          when { context.scopes.contains("items:write") };
        permit(principal in Bench::Role::"admin", action, resource)
          when { context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) };
        permit(principal in Bench::Role::"editor", action == Bench::Action::"POST /tenants/{tenant}/items", resource);
        forbid(principal, action in Bench::Action::"write", resource)
          when { context has params && context.params.id == "0" };
        forbid(principal is Bench::Anonymous, action in Bench::Action::"write", resource);
        forbid(principal, action, resource)
          when { context has client_ip && context.client_ip.isInRange(ip("203.0.113.0/24")) };
        forbid(principal in Bench::Role::"suspended", action, resource);
        "#,
    );
    for i in 0..10 {
        policies.push_str(&format!(
            "permit(principal in Bench::Role::\"tenant-{i}\", action in Bench::Action::\"read\", resource)\n  when {{ context has params && context.params.tenant == \"tenant-{i}\" }};\n"
        ));
    }
    policies
}

fn bench_cedar(c: &mut Criterion) {
    let policy = CedarPolicy::builder()
        .namespace("Bench")
        .schema_str(SCHEMA)
        .policies_str(cedar_policies())
        .build()
        .unwrap();
    assert_eq!(policy.policy_count(), 20);
    let rbac = rbac();
    let admin = alice();
    let params = [("tenant", "acme"), ("id", "42")];
    let allow = PolicyContext::new(&Method::GET, ROUTE)
        .with_principal(Some(&admin))
        .with_params(&params)
        .with_client_ip(Some("10.1.2.3".parse().unwrap()))
        .with_rbac(&rbac);
    assert!(policy.evaluate(&allow).is_allow());
    c.bench_function("cedar/20_policies_allow", |b| {
        b.iter(|| black_box(&policy).evaluate(black_box(&allow)))
    });
    let delete = Method::DELETE;
    let deny = PolicyContext::new(&delete, ROUTE)
        .with_params(&params)
        .with_client_ip(Some("192.0.2.1".parse().unwrap()))
        .with_rbac(&rbac);
    assert!(!policy.evaluate(&deny).is_allow());
    c.bench_function("cedar/20_policies_deny", |b| {
        b.iter(|| black_box(&policy).evaluate(black_box(&deny)))
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_rbac(&mut c);
    bench_abac(&mut c);
    bench_cedar(&mut c);
    c.final_summary();
}
