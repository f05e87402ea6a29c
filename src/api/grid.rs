//! `neurograph.v1.GridService`: spatial queries over the default grid (every token) or a user
//! grid, and user grid management. Queries read the trees; changes go through the write path.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::consistency::{answer_write, begin_read, call_writes};
use super::convert::{self, token_not_found};
use super::offload::offload;
use super::pb::{self, grid_service_server::GridService};
use crate::heavy::HeavyWork;
use crate::model::grid::{
    self, check_k, check_max_distance, check_radius, check_range_limit, GridConfig, GridId, Hit,
    DEFAULT_GRID,
};
use crate::model::{Space, TokenId, Violations};
use crate::store::grids::GridCommand;
use crate::store::spatial::query_origin;
use crate::store::{
    Engine, Grids, SpaceTrees, SpatialIndex, Store, StoreError, UserGrid, Writes, Written,
};

/// The GridService implementation.
#[derive(Clone)]
pub struct GridApi {
    store: Arc<Store>,
    writes: Writes,
    index: Arc<SpatialIndex>,
    grids: Arc<Grids>,
    heavy: HeavyWork,
}

/// The grid a query reads (owned, so that the query can run as heavy work).
enum QueryGrid {
    Default(Arc<SpatialIndex>),
    User(Arc<UserGrid>),
}

impl QueryGrid {
    fn trees(&self) -> &SpaceTrees {
        match self {
            QueryGrid::Default(index) => index.trees(),
            QueryGrid::User(grid) => grid.trees(),
        }
    }

    fn config(&self) -> GridConfig {
        match self {
            QueryGrid::Default(_) => GridConfig::default(),
            QueryGrid::User(grid) => grid.config(),
        }
    }
}

/// The common part of the point queries (range, density, influence) and of a watched
/// region, validated together.
pub(super) struct PointQuery {
    pub(super) space: Space,
    pub(super) centre: [f64; 3],
    pub(super) radius: f64,
}

impl PointQuery {
    /// The validated common part, or every violation of it.
    pub(super) fn parse(
        space: i32,
        centre: Option<&pb::Point3>,
        radius: f64,
    ) -> Result<PointQuery, Violations> {
        let mut violations = Violations::default();
        let space = violations.take(convert::space(space, "space"));
        let centre = violations.take(convert::centre(centre, "center"));
        let radius =
            violations.take(check_radius(radius).map_err(|r| Violations::one("radius", r)));
        match (space, centre, radius) {
            (Some(space), Some(centre), Some(radius)) => Ok(PointQuery {
                space,
                centre,
                radius,
            }),
            _ => Err(violations),
        }
    }
}

fn neighbors(hits: Vec<Hit>) -> Vec<pb::Neighbor> {
    hits.into_iter()
        .map(|hit| pb::Neighbor {
            token_id: hit.id,
            distance: hit.distance,
        })
        .collect()
}

impl GridApi {
    /// A service over the engine's default grid (its index) and user grids; its queries run
    /// as `heavy` work (any of them may visit every token).
    pub fn new(engine: &Engine, heavy: HeavyWork) -> Self {
        GridApi {
            store: Arc::clone(&engine.store),
            writes: engine.writes.clone(),
            index: Arc::clone(&engine.index),
            grids: Arc::clone(&engine.grids),
            heavy,
        }
    }

    fn query_grid(&self, id: GridId) -> Result<QueryGrid, StoreError> {
        if id == DEFAULT_GRID {
            return Ok(QueryGrid::Default(Arc::clone(&self.index)));
        }
        self.grids
            .get(id)
            .map(QueryGrid::User)
            .ok_or(StoreError::GridNotFound(id))
    }

    fn default_grid(&self) -> pb::Grid {
        pb::Grid {
            grid_id: DEFAULT_GRID,
            config: Some(GridConfig::default().into()),
            token_count: self.store.tables().len(),
        }
    }

    /// Applies a membership change of `grid` for the token with raw id `raw_token`: 0 is a
    /// violation, an id no token can have NOT_FOUND; the write path checks the rest.
    async fn change_membership(
        &self,
        metadata: &MetadataMap,
        grid: GridId,
        raw_token: u32,
        command: fn(GridId, TokenId) -> GridCommand,
    ) -> Result<Written<()>, Status> {
        let token = convert::existing_id(raw_token, "token_id")?
            .ok_or_else(|| token_not_found("token_id", raw_token))?;
        let writes = call_writes(&self.writes, metadata)?;
        Ok(writes.change_grid(command(grid, token)).await?)
    }
}

fn user_grid(grid: &UserGrid) -> pb::Grid {
    pb::Grid {
        grid_id: grid.id(),
        config: Some(grid.config().into()),
        token_count: grid.token_count(),
    }
}

#[tonic::async_trait]
impl GridService for GridApi {
    async fn find_neighbors(
        &self,
        request: Request<pb::FindNeighborsRequest>,
    ) -> Result<Response<pb::FindNeighborsResponse>, Status> {
        let metadata = request.metadata().clone();
        let read = begin_read(&self.store, &metadata).await?;
        let r = request.into_inner();
        let mut violations = Violations::default();
        let space = violations.take(convert::space(r.space, "space"));
        let k = violations.take(check_k(r.k).map_err(|rule| Violations::one("k", rule)));
        let max = violations.take(
            check_max_distance(r.max_distance)
                .map_err(|rule| Violations::one("max_distance", rule)),
        );
        let id = violations.take(convert::existing_id(r.token_id, "token_id"));
        let (Some(space), Some(k), Some(max), Some(id)) = (space, k, max, id) else {
            return Err(violations.into());
        };
        let grid = self.query_grid(r.grid_id)?;
        let token = id
            .and_then(|id| self.store.get(id))
            .ok_or_else(|| token_not_found("token_id", r.token_id))?;
        let point = query_origin(&token, space)?;
        let origin = point.to_f64(space);
        let hits = offload(&self.heavy, &metadata, move || {
            grid.trees()
                .nearest(space, origin, k, max, Some(token.id.get()))
        })
        .await?;
        let response = pb::FindNeighborsResponse {
            neighbors: neighbors(hits),
        };
        read.answer(response).await
    }

    async fn range_query(
        &self,
        request: Request<pb::RangeQueryRequest>,
    ) -> Result<Response<pb::RangeQueryResponse>, Status> {
        let metadata = request.metadata().clone();
        let read = begin_read(&self.store, &metadata).await?;
        let r = request.into_inner();
        let mut violations = Violations::default();
        let query = violations.take(PointQuery::parse(r.space, r.center.as_ref(), r.radius));
        let limit = violations
            .take(check_range_limit(r.limit).map_err(|rule| Violations::one("limit", rule)));
        let (Some(q), Some(limit)) = (query, limit) else {
            return Err(violations.into());
        };
        let grid = self.query_grid(r.grid_id)?;
        let found = offload(&self.heavy, &metadata, move || {
            grid.trees().within(q.space, q.centre, q.radius, limit)
        })
        .await?;
        let response = pb::RangeQueryResponse {
            results: neighbors(found.hits),
            total_in_range: found.total,
        };
        read.answer(response).await
    }

    async fn calculate_density(
        &self,
        request: Request<pb::CalculateDensityRequest>,
    ) -> Result<Response<pb::CalculateDensityResponse>, Status> {
        let metadata = request.metadata().clone();
        let read = begin_read(&self.store, &metadata).await?;
        let r = request.into_inner();
        let q = PointQuery::parse(r.space, r.center.as_ref(), r.radius)?;
        let grid = self.query_grid(r.grid_id)?;
        let threshold = grid.config().density_threshold;
        let count = offload(&self.heavy, &metadata, move || {
            grid.trees().count_within(q.space, q.centre, q.radius)
        })
        .await?;
        let density = grid::density(count, q.radius);
        let response = pb::CalculateDensityResponse {
            density,
            tokens_in_range: count,
            dense: density >= threshold,
        };
        read.answer(response).await
    }

    async fn field_influence(
        &self,
        request: Request<pb::FieldInfluenceRequest>,
    ) -> Result<Response<pb::FieldInfluenceResponse>, Status> {
        let metadata = request.metadata().clone();
        let read = begin_read(&self.store, &metadata).await?;
        let r = request.into_inner();
        let q = PointQuery::parse(r.space, r.center.as_ref(), r.radius)?;
        let grid = self.query_grid(r.grid_id)?;
        let config = grid.config();
        let sum = offload(&self.heavy, &metadata, move || {
            grid.trees().influence(q.space, q.centre, q.radius)
        })
        .await?;
        let response = pb::FieldInfluenceResponse {
            influence: grid::reported_influence(sum.sum, sum.contributors, &config),
            contributors: sum.contributors,
        };
        read.answer(response).await
    }

    async fn create_grid(
        &self,
        request: Request<pb::CreateGridRequest>,
    ) -> Result<Response<pb::Grid>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let config = convert::grid_config(request.get_ref().config.as_ref())?;
        let created = writes.create_grid(config).await?;
        Ok(answer_write(created, |(grid, config)| pb::Grid {
            grid_id: grid,
            config: Some(config.into()),
            token_count: 0,
        }))
    }

    async fn get_grid(
        &self,
        request: Request<pb::GetGridRequest>,
    ) -> Result<Response<pb::Grid>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let id = request.get_ref().grid_id;
        let grid = match self.query_grid(id)? {
            QueryGrid::Default(_) => self.default_grid(),
            QueryGrid::User(grid) => user_grid(&grid),
        };
        read.answer(grid).await
    }

    async fn list_grids(
        &self,
        request: Request<pb::ListGridsRequest>,
    ) -> Result<Response<pb::ListGridsResponse>, Status> {
        let read = begin_read(&self.store, request.metadata()).await?;
        let mut grids = vec![self.default_grid()];
        grids.extend(self.grids.list().iter().map(|g| user_grid(g)));
        read.answer(pb::ListGridsResponse { grids }).await
    }

    async fn delete_grid(
        &self,
        request: Request<pb::DeleteGridRequest>,
    ) -> Result<Response<pb::DeleteGridResponse>, Status> {
        let writes = call_writes(&self.writes, request.metadata())?;
        let grid = request.get_ref().grid_id;
        let deleted = writes.change_grid(GridCommand::Delete { grid }).await?;
        Ok(answer_write(deleted, |()| pb::DeleteGridResponse {}))
    }

    async fn add_token(
        &self,
        request: Request<pb::AddTokenRequest>,
    ) -> Result<Response<pb::AddTokenResponse>, Status> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let changed = self
            .change_membership(&metadata, r.grid_id, r.token_id, |grid, token| {
                GridCommand::AddMember { grid, token }
            })
            .await?;
        Ok(answer_write(changed, |()| pb::AddTokenResponse {}))
    }

    async fn remove_token(
        &self,
        request: Request<pb::RemoveTokenRequest>,
    ) -> Result<Response<pb::RemoveTokenResponse>, Status> {
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let changed = self
            .change_membership(&metadata, r.grid_id, r.token_id, |grid, token| {
                GridCommand::RemoveMember { grid, token }
            })
            .await?;
        Ok(answer_write(changed, |()| pb::RemoveTokenResponse {}))
    }
}
