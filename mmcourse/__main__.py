from mmcourse.cli import main

raise SystemExit(main())
