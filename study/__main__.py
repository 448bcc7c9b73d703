from __future__ import annotations

from study import cli

raise SystemExit(cli.main())
