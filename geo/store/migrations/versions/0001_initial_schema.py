"""Initial schema: the grid hierarchy with boundary versions, buildings and units, staff, incidents, users, audit.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 19:48:14.374401
"""

import csv
from typing import Any

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

#: alembic's `op` with the *_geospatial_* operations geoalchemy2.alembic_helpers registers on it at runtime
#: (alembic's type stubs cannot know them).
geo_op: Any = op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE EXTENSION IF NOT EXISTS postgis')
    op.execute('CREATE EXTENSION IF NOT EXISTS btree_gist')
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('method', sa.String(length=10), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.Column('target_type', sa.String(length=32), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('jurisdiction_code', sa.String(length=18), nullable=True),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
    op.create_index(op.f('ix_audit_log_jurisdiction_code'), 'audit_log', ['jurisdiction_code'], unique=False)
    op.create_table('boundary_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('valid_from')
    )
    op.create_table('incident_classes',
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('major_code', sa.String(length=16), nullable=True),
    sa.Column('time_limit_hours', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['major_code'], ['incident_classes.code'], ),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('streets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=9), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.CheckConstraint("code ~ '^[0-9]{9}$'", name='streets_code_format'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('jurisdiction_level', sa.String(length=16), nullable=True),
    sa.Column('jurisdiction_code', sa.String(length=18), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('token_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("jurisdiction_level IS NULL OR jurisdiction_level IN ('street','community','grid')",
            name='users_jurisdiction_level'),
    sa.CheckConstraint("role IN ('admin','planner','leader','worker')", name='users_role'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('prefix')
    )
    op.create_index(op.f('ix_api_keys_user_id'), 'api_keys', ['user_id'], unique=False)
    op.create_table('communities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('street_id', sa.Integer(), nullable=False),
    sa.CheckConstraint("code ~ '^[0-9]{12}$'", name='communities_code_format'),
    sa.ForeignKeyConstraint(['street_id'], ['streets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_index(op.f('ix_communities_street_id'), 'communities', ['street_id'], unique=False)
    geo_op.create_geospatial_table('street_boundaries',
    sa.Column('street_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('ST_IsValid(geom) AND NOT ST_IsEmpty(geom)', name='street_boundaries_geom_valid'),
    sa.ForeignKeyConstraint(['street_id'], ['streets.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['boundary_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_street_boundaries_geom', 'street_boundaries', ['geom'], unique=False,
            postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_street_boundaries_street_id'), 'street_boundaries', ['street_id'], unique=False)
    geo_op.create_geospatial_table('community_boundaries',
    sa.Column('community_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('ST_IsValid(geom) AND NOT ST_IsEmpty(geom)', name='community_boundaries_geom_valid'),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['boundary_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_community_boundaries_geom', 'community_boundaries', ['geom'], unique=False,
            postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_community_boundaries_community_id'), 'community_boundaries', ['community_id'],
            unique=False)
    geo_op.create_geospatial_table('compounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('kind', sa.Enum('commercial', 'old', 'work_unit', 'open', name='compound_kind', native_enum=False,
            length=32), nullable=False),
    sa.Column('has_property_management', sa.Boolean(), nullable=False),
    sa.Column('has_owners_committee', sa.Boolean(), nullable=False),
    sa.Column('community_id', sa.Integer(), nullable=True),
    sa.Column('source_ref', sa.String(length=100), nullable=True),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.CheckConstraint('ST_IsValid(geom) AND NOT ST_IsEmpty(geom)', name='compounds_geom_valid'),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_compounds_geom', 'compounds', ['geom'], unique=False, postgresql_using='gist',
            postgresql_ops={})
    op.create_index(op.f('ix_compounds_community_id'), 'compounds', ['community_id'], unique=False)
    op.create_table('grids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=15), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.Enum('comprehensive', 'dedicated', name='grid_kind', native_enum=False, length=32),
            nullable=False),
    sa.Column('dedicated_type', sa.String(length=32), nullable=True),
    sa.Column('community_id', sa.Integer(), nullable=False),
    sa.CheckConstraint("code ~ '^[0-9]{15}$'", name='grids_code_format'),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_index(op.f('ix_grids_community_id'), 'grids', ['community_id'], unique=False)
    geo_op.create_geospatial_table('buildings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=20), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('community_id', sa.Integer(), nullable=True),
    sa.Column('compound_id', sa.Integer(), nullable=True),
    sa.Column('floors', sa.Integer(), nullable=True),
    sa.Column('use', sa.String(length=32), nullable=False),
    sa.Column('source_ref', sa.String(length=100), nullable=True),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.CheckConstraint('ST_IsValid(geom) AND NOT ST_IsEmpty(geom)', name='buildings_geom_valid'),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], ),
    sa.ForeignKeyConstraint(['compound_id'], ['compounds.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_buildings_geom', 'buildings', ['geom'], unique=False, postgresql_using='gist',
            postgresql_ops={})
    op.create_index(op.f('ix_buildings_community_id'), 'buildings', ['community_id'], unique=False)
    op.create_index(op.f('ix_buildings_compound_id'), 'buildings', ['compound_id'], unique=False)
    geo_op.create_geospatial_table('grid_boundaries',
    sa.Column('grid_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('ST_IsValid(geom) AND NOT ST_IsEmpty(geom)', name='grid_boundaries_geom_valid'),
    sa.ForeignKeyConstraint(['grid_id'], ['grids.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['boundary_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_grid_boundaries_geom', 'grid_boundaries', ['geom'], unique=False,
            postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_grid_boundaries_grid_id'), 'grid_boundaries', ['grid_id'], unique=False)
    op.create_table('micro_grids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=18), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('grid_id', sa.Integer(), nullable=False),
    sa.CheckConstraint("code ~ '^[0-9]{17,18}$'", name='micro_grids_code_format'),
    sa.ForeignKeyConstraint(['grid_id'], ['grids.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_index(op.f('ix_micro_grids_grid_id'), 'micro_grids', ['grid_id'], unique=False)
    geo_op.create_geospatial_table('incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('class_code', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('reporter', sa.String(length=100), nullable=True),
    sa.Column('reporter_phone', sa.String(length=32), nullable=True),
    sa.Column('department', sa.String(length=100), nullable=True),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('street_id', sa.Integer(), nullable=True),
    sa.Column('community_id', sa.Integer(), nullable=True),
    sa.Column('grid_id', sa.Integer(), nullable=True),
    sa.Column('micro_grid_id', sa.Integer(), nullable=True),
    sa.Column('compound_id', sa.Integer(), nullable=True),
    sa.Column('building_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('NOT ST_IsEmpty(geom)', name='incidents_geom_nonempty'),
    sa.ForeignKeyConstraint(['building_id'], ['buildings.id'], ),
    sa.ForeignKeyConstraint(['class_code'], ['incident_classes.code'], ),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], ),
    sa.ForeignKeyConstraint(['compound_id'], ['compounds.id'], ),
    sa.ForeignKeyConstraint(['grid_id'], ['grids.id'], ),
    sa.ForeignKeyConstraint(['micro_grid_id'], ['micro_grids.id'], ),
    sa.ForeignKeyConstraint(['street_id'], ['streets.id'], ),
    sa.ForeignKeyConstraint(['version_id'], ['boundary_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_incidents_geom', 'incidents', ['geom'], unique=False, postgresql_using='gist',
            postgresql_ops={})
    op.create_index(op.f('ix_incidents_class_code'), 'incidents', ['class_code'], unique=False)
    op.create_index(op.f('ix_incidents_community_id'), 'incidents', ['community_id'], unique=False)
    op.create_index(op.f('ix_incidents_grid_id'), 'incidents', ['grid_id'], unique=False)
    op.create_index(op.f('ix_incidents_reported_at'), 'incidents', ['reported_at'], unique=False)
    op.create_index(op.f('ix_incidents_state'), 'incidents', ['state'], unique=False)
    op.create_index(op.f('ix_incidents_street_id'), 'incidents', ['street_id'], unique=False)
    geo_op.create_geospatial_table('micro_grid_boundaries',
    sa.Column('micro_grid_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False,
            from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('ST_IsValid(geom) AND NOT ST_IsEmpty(geom)', name='micro_grid_boundaries_geom_valid'),
    sa.ForeignKeyConstraint(['micro_grid_id'], ['micro_grids.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['boundary_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    geo_op.create_geospatial_index('idx_micro_grid_boundaries_geom', 'micro_grid_boundaries', ['geom'], unique=False,
            postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_micro_grid_boundaries_micro_grid_id'), 'micro_grid_boundaries', ['micro_grid_id'],
            unique=False)
    op.create_table('people',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('phone_public', sa.Boolean(), nullable=False),
    sa.Column('party_member', sa.Boolean(), nullable=False),
    sa.Column('home_building_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['home_building_id'], ['buildings.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('building_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('households', sa.Integer(), nullable=False),
    sa.Column('population', sa.Integer(), nullable=False),
    sa.CheckConstraint('households >= 0 AND population >= 0', name='units_counts_nonnegative'),
    sa.ForeignKeyConstraint(['building_id'], ['buildings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('building_id', 'number')
    )
    op.create_index(op.f('ix_units_building_id'), 'units', ['building_id'], unique=False)
    op.create_table('incident_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_incident_events_incident_id'), 'incident_events', ['incident_id'], unique=False)
    op.create_table('staff_assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.Enum('grid_chief', 'grid_worker_fulltime', 'grid_worker_parttime', 'volunteer',
            'building_head', 'unit_head', 'steward', 'seconded_cadre', name='staff_role', native_enum=False,
            length=32), nullable=False),
    sa.Column('target_type', sa.Enum('grid', 'micro_grid', 'building', 'unit', name='target_type', native_enum=False,
            length=32), nullable=False),
    sa.Column('grid_id', sa.Integer(), nullable=True),
    sa.Column('micro_grid_id', sa.Integer(), nullable=True),
    sa.Column('building_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('households', sa.Integer(), nullable=True),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_to', sa.Date(), nullable=True),
    sa.CheckConstraint("(target_type = 'grid') = (grid_id IS NOT NULL) AND "
                       "(target_type = 'micro_grid') = (micro_grid_id IS NOT NULL) AND "
                       "(target_type = 'building') = (building_id IS NOT NULL) AND "
                       "(target_type = 'unit') = (unit_id IS NOT NULL)", name='staff_assignments_one_target'),
    sa.CheckConstraint('valid_to IS NULL OR valid_to >= valid_from', name='staff_assignments_period'),
    sa.ForeignKeyConstraint(['building_id'], ['buildings.id'], ),
    sa.ForeignKeyConstraint(['grid_id'], ['grids.id'], ),
    sa.ForeignKeyConstraint(['micro_grid_id'], ['micro_grids.id'], ),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_staff_assignments_building_id'), 'staff_assignments', ['building_id'], unique=False)
    op.create_index(op.f('ix_staff_assignments_grid_id'), 'staff_assignments', ['grid_id'], unique=False)
    op.create_index(op.f('ix_staff_assignments_micro_grid_id'), 'staff_assignments', ['micro_grid_id'], unique=False)
    op.create_index(op.f('ix_staff_assignments_person_id'), 'staff_assignments', ['person_id'], unique=False)
    op.create_index(op.f('ix_staff_assignments_unit_id'), 'staff_assignments', ['unit_id'], unique=False)
    _create_integrity_and_views()
    _seed_incident_classes()


def downgrade() -> None:
    _drop_integrity_and_views()
    op.drop_index(op.f('ix_staff_assignments_unit_id'), table_name='staff_assignments')
    op.drop_index(op.f('ix_staff_assignments_person_id'), table_name='staff_assignments')
    op.drop_index(op.f('ix_staff_assignments_micro_grid_id'), table_name='staff_assignments')
    op.drop_index(op.f('ix_staff_assignments_grid_id'), table_name='staff_assignments')
    op.drop_index(op.f('ix_staff_assignments_building_id'), table_name='staff_assignments')
    op.drop_table('staff_assignments')
    op.drop_index(op.f('ix_incident_events_incident_id'), table_name='incident_events')
    op.drop_table('incident_events')
    op.drop_index(op.f('ix_units_building_id'), table_name='units')
    op.drop_table('units')
    op.drop_table('people')
    op.drop_index(op.f('ix_micro_grid_boundaries_micro_grid_id'), table_name='micro_grid_boundaries')
    geo_op.drop_geospatial_index('idx_micro_grid_boundaries_geom', table_name='micro_grid_boundaries',
            postgresql_using='gist', column_name='geom')
    geo_op.drop_geospatial_table('micro_grid_boundaries')
    op.drop_index(op.f('ix_incidents_street_id'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_state'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_reported_at'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_grid_id'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_community_id'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_class_code'), table_name='incidents')
    geo_op.drop_geospatial_index('idx_incidents_geom', table_name='incidents', postgresql_using='gist',
            column_name='geom')
    geo_op.drop_geospatial_table('incidents')
    op.drop_index(op.f('ix_micro_grids_grid_id'), table_name='micro_grids')
    op.drop_table('micro_grids')
    op.drop_index(op.f('ix_grid_boundaries_grid_id'), table_name='grid_boundaries')
    geo_op.drop_geospatial_index('idx_grid_boundaries_geom', table_name='grid_boundaries', postgresql_using='gist',
            column_name='geom')
    geo_op.drop_geospatial_table('grid_boundaries')
    op.drop_index(op.f('ix_buildings_compound_id'), table_name='buildings')
    op.drop_index(op.f('ix_buildings_community_id'), table_name='buildings')
    geo_op.drop_geospatial_index('idx_buildings_geom', table_name='buildings', postgresql_using='gist',
            column_name='geom')
    geo_op.drop_geospatial_table('buildings')
    op.drop_index(op.f('ix_grids_community_id'), table_name='grids')
    op.drop_table('grids')
    op.drop_index(op.f('ix_compounds_community_id'), table_name='compounds')
    geo_op.drop_geospatial_index('idx_compounds_geom', table_name='compounds', postgresql_using='gist',
            column_name='geom')
    geo_op.drop_geospatial_table('compounds')
    op.drop_index(op.f('ix_community_boundaries_community_id'), table_name='community_boundaries')
    geo_op.drop_geospatial_index('idx_community_boundaries_geom', table_name='community_boundaries',
            postgresql_using='gist', column_name='geom')
    geo_op.drop_geospatial_table('community_boundaries')
    op.drop_index(op.f('ix_street_boundaries_street_id'), table_name='street_boundaries')
    geo_op.drop_geospatial_index('idx_street_boundaries_geom', table_name='street_boundaries', postgresql_using='gist',
            column_name='geom')
    geo_op.drop_geospatial_table('street_boundaries')
    op.drop_index(op.f('ix_communities_street_id'), table_name='communities')
    op.drop_table('communities')
    op.drop_index(op.f('ix_api_keys_user_id'), table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_table('users')
    op.drop_table('streets')
    op.drop_table('incident_classes')
    op.drop_table('boundary_versions')
    op.drop_index(op.f('ix_audit_log_jurisdiction_code'), table_name='audit_log')
    op.drop_index(op.f('ix_audit_log_at'), table_name='audit_log')
    op.drop_table('audit_log')


LEVELS = {
    # level: (identity table, boundary table, identity columns besides id/code/name)
    "streets": ("streets", "street_boundaries", "street_id", ""),
    "communities": ("communities", "community_boundaries", "community_id", ", u.street_id"),
    "grids": ("grids", "grid_boundaries", "grid_id", ", u.kind, u.dedicated_type, u.community_id"),
    "micro_grids": ("micro_grids", "micro_grid_boundaries", "micro_grid_id", ", u.grid_id"),
}


def _create_integrity_and_views() -> None:
    for level, (ident, bounds, fk, extra) in LEVELS.items():
        # One boundary per unit at any instant: versions of the same unit never overlap in time.
        op.execute(
            f"ALTER TABLE {bounds} ADD CONSTRAINT {bounds}_one_version_at_a_time "
            f"EXCLUDE USING gist ({fk} WITH =, tstzrange(valid_from, valid_to) WITH &&)"
        )
        op.execute(
            f"ALTER TABLE {bounds} ADD CONSTRAINT {bounds}_period CHECK (valid_to IS NULL OR valid_to > valid_from)"
        )
        op.execute(f"CREATE INDEX ix_{bounds}_period ON {bounds} USING gist (tstzrange(valid_from, valid_to))")
        select = (
            f"SELECT u.id, u.code, u.name{extra}, b.id AS boundary_id, b.version_id, b.valid_from, b.valid_to, b.geom "
            f"FROM {ident} u JOIN {bounds} b ON b.{fk} = u.id "
        )
        # {level}_at(ts): the units and boundaries in force at ts; inlined by the planner (single SELECT, STABLE).
        op.execute(f"CREATE VIEW {level}_history AS {select}")
        op.execute(
            f"CREATE FUNCTION {level}_at(ts timestamptz) RETURNS SETOF {level}_history LANGUAGE sql STABLE AS $$ "
            f"SELECT * FROM {level}_history h WHERE h.valid_from <= ts AND (h.valid_to IS NULL OR h.valid_to > ts) $$"
        )
        op.execute(f"CREATE VIEW current_{level} AS SELECT * FROM {level}_at(now())")
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
        """
    )


def _drop_integrity_and_views() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for level in LEVELS:
        op.execute(f"DROP VIEW IF EXISTS current_{level}")
        op.execute(f"DROP FUNCTION IF EXISTS {level}_at(timestamptz)")
        op.execute(f"DROP VIEW IF EXISTS {level}_history")


def _seed_incident_classes() -> None:
    """The class table is data (data/incident_classes.csv), seeded here, editable afterwards."""
    from data import DATA_DIR

    path = DATA_DIR / "incident_classes.csv"
    with path.open(encoding="utf-8") as f:
        rows = [
            {**r, "major_code": r["major_code"] or None, "time_limit_hours": float(r["time_limit_hours"])}
            for r in csv.DictReader(f)
        ]
    table = sa.table(
        "incident_classes",
        sa.column("code", sa.String),
        sa.column("name", sa.String),
        sa.column("major_code", sa.String),
        sa.column("time_limit_hours", sa.Float),
    )
    op.bulk_insert(table, rows)
