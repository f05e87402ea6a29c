//! The one table from `neurograph.v1` method to the role it needs (API.md §7). A method this
//! table does not name needs `admin`, so an RPC added later is never open by accident; a test
//! walks every method of the served descriptors and fails on one missing here. Health and
//! reflection need nothing at all.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::Role;

/// Every `neurograph.v1` method with the least role that may call it.
pub const METHOD_ROLES: &[(&str, Role)] = &[
    // TokenService
    ("/neurograph.v1.TokenService/GetToken", Role::Reader),
    ("/neurograph.v1.TokenService/ListTokens", Role::Reader),
    ("/neurograph.v1.TokenService/CountTokens", Role::Reader),
    ("/neurograph.v1.TokenService/StreamTokens", Role::Reader),
    ("/neurograph.v1.TokenService/WatchTokens", Role::Reader),
    ("/neurograph.v1.TokenService/CreateToken", Role::Writer),
    ("/neurograph.v1.TokenService/UpdateToken", Role::Writer),
    ("/neurograph.v1.TokenService/DeleteToken", Role::Writer),
    (
        "/neurograph.v1.TokenService/BatchCreateTokens",
        Role::Writer,
    ),
    ("/neurograph.v1.TokenService/ImportTokens", Role::Writer),
    ("/neurograph.v1.TokenService/ClearTokens", Role::Admin),
    // GridService
    ("/neurograph.v1.GridService/FindNeighbors", Role::Reader),
    ("/neurograph.v1.GridService/RangeQuery", Role::Reader),
    ("/neurograph.v1.GridService/CalculateDensity", Role::Reader),
    ("/neurograph.v1.GridService/FieldInfluence", Role::Reader),
    ("/neurograph.v1.GridService/GetGrid", Role::Reader),
    ("/neurograph.v1.GridService/ListGrids", Role::Reader),
    ("/neurograph.v1.GridService/CreateGrid", Role::Writer),
    ("/neurograph.v1.GridService/DeleteGrid", Role::Writer),
    ("/neurograph.v1.GridService/AddToken", Role::Writer),
    ("/neurograph.v1.GridService/RemoveToken", Role::Writer),
    // CDNAService
    ("/neurograph.v1.CDNAService/GetConfig", Role::Reader),
    ("/neurograph.v1.CDNAService/ListProfiles", Role::Reader),
    ("/neurograph.v1.CDNAService/GetProfile", Role::Reader),
    ("/neurograph.v1.CDNAService/ValidateScales", Role::Reader),
    (
        "/neurograph.v1.CDNAService/GetQuarantineStatus",
        Role::Reader,
    ),
    ("/neurograph.v1.CDNAService/GetHistory", Role::Reader),
    ("/neurograph.v1.CDNAService/UpdateConfig", Role::Admin),
    ("/neurograph.v1.CDNAService/SwitchProfile", Role::Admin),
    ("/neurograph.v1.CDNAService/ResetConfig", Role::Admin),
    ("/neurograph.v1.CDNAService/StartQuarantine", Role::Admin),
    ("/neurograph.v1.CDNAService/StopQuarantine", Role::Admin),
    // System
    ("/neurograph.v1.System/Health", Role::Reader),
    ("/neurograph.v1.System/Ready", Role::Reader),
    ("/neurograph.v1.System/Status", Role::Reader),
    ("/neurograph.v1.System/CreateBackup", Role::Admin),
];

/// Path prefixes of the services that need no credential: probes and reflection.
const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What a call to a path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: health and reflection.
    Open,
    /// A credential with at least this role.
    Role(Role),
}

static TABLE: LazyLock<HashMap<&'static str, Role, foldhash::fast::RandomState>> =
    LazyLock::new(|| METHOD_ROLES.iter().copied().collect());

/// What a call to `path` (`/package.Service/Method`) needs. Any path this table does not name,
/// also one of no service at all, needs `admin`.
pub fn requirement(path: &str) -> Requirement {
    if let Some(role) = TABLE.get(path) {
        return Requirement::Role(*role);
    }
    if OPEN_SERVICES.iter().any(|prefix| path.starts_with(prefix)) {
        return Requirement::Open;
    }
    Requirement::Role(Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_methods_need_admin_and_probes_need_nothing() {
        assert_eq!(
            requirement("/neurograph.v1.TokenService/SomethingNew"),
            Requirement::Role(Role::Admin)
        );
        assert_eq!(
            requirement("/other.Service/X"),
            Requirement::Role(Role::Admin)
        );
        assert_eq!(
            requirement("/grpc.health.v1.Health/Check"),
            Requirement::Open
        );
        assert_eq!(
            requirement("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Requirement::Open
        );
        assert_eq!(
            requirement("/neurograph.v1.TokenService/GetToken"),
            Requirement::Role(Role::Reader)
        );
    }

    #[test]
    fn the_table_names_each_method_once() {
        let mut paths: Vec<&str> = METHOD_ROLES.iter().map(|(path, _)| *path).collect();
        paths.sort_unstable();
        let before = paths.len();
        paths.dedup();
        assert_eq!(before, paths.len(), "a method is listed twice");
    }
}
