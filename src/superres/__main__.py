from superres.cli import main

raise SystemExit(main())
