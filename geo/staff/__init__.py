"""Staff (人员): the register and assignments (register), coverage and gaps (coverage), steward planning (stewards)."""
