from rtserver.cli import main

raise SystemExit(main())
