# The dashboard page (dashboard/) as flowmarkd serves it: its own files plus the one charting
# library, uPlot, installed from the npm registry by `npm ci` from dashboard/package-lock.json
# (exact version and integrity hash; --ignore-scripts: no install scripts run; --prefer-offline:
# npm's cache first). node_modules lives in the build tree, never in the sources; the page
# loads nothing from a CDN. Result: ${FLOWMARK_DASHBOARD_DIR} (build/<preset>/dashboard), the
# directory the tests point `static_dir` at and what is installed to share/flowmark/dashboard.
find_program(NPM_EXECUTABLE npm)
if(NOT NPM_EXECUTABLE)
  message(FATAL_ERROR "npm not found: the dashboard page needs it to install its charting "
          "library (scripts/install-deps.sh installs it; Debian: apt-get install npm)")
endif()

set(_dash_src ${PROJECT_SOURCE_DIR}/dashboard)
set(_dash_npm ${PROJECT_BINARY_DIR}/dashboard-npm)
set(FLOWMARK_DASHBOARD_DIR ${PROJECT_BINARY_DIR}/dashboard)
set(_dash_lib_dist ${_dash_npm}/node_modules/uplot/dist)
set(_dash_stamp ${_dash_npm}/npm-ci.stamp)

add_custom_command(OUTPUT ${_dash_stamp}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_dash_npm}
  COMMAND ${CMAKE_COMMAND} -E copy ${_dash_src}/package.json ${_dash_src}/package-lock.json
          ${_dash_npm}/
  COMMAND ${NPM_EXECUTABLE} ci --ignore-scripts --prefer-offline --no-audit --no-fund
          --loglevel=error
  COMMAND ${CMAKE_COMMAND} -E touch ${_dash_stamp}
  WORKING_DIRECTORY ${_dash_npm}
  DEPENDS ${_dash_src}/package.json ${_dash_src}/package-lock.json
  COMMENT "Installing the dashboard's charting library (npm ci from package-lock.json)"
  VERBATIM)

set(_dash_page ${_dash_src}/index.html ${_dash_src}/app.js ${_dash_src}/style.css)
set(_dash_outputs "")
foreach(_f IN LISTS _dash_page)
  get_filename_component(_name ${_f} NAME)
  list(APPEND _dash_outputs ${FLOWMARK_DASHBOARD_DIR}/${_name})
endforeach()
list(APPEND _dash_outputs ${FLOWMARK_DASHBOARD_DIR}/uPlot.iife.min.js
     ${FLOWMARK_DASHBOARD_DIR}/uPlot.min.css)
add_custom_command(OUTPUT ${_dash_outputs}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${FLOWMARK_DASHBOARD_DIR}
  COMMAND ${CMAKE_COMMAND} -E copy ${_dash_page} ${FLOWMARK_DASHBOARD_DIR}/
  COMMAND ${CMAKE_COMMAND} -E copy ${_dash_lib_dist}/uPlot.iife.min.js
          ${_dash_lib_dist}/uPlot.min.css ${FLOWMARK_DASHBOARD_DIR}/
  DEPENDS ${_dash_page} ${_dash_stamp}
  COMMENT "Assembling the dashboard page in ${FLOWMARK_DASHBOARD_DIR}"
  VERBATIM)
add_custom_target(dashboard ALL DEPENDS ${_dash_outputs})
