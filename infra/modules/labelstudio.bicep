// Label Studio (HumanSignal's open-source edition) on Azure Container Apps: where people label the items the
// selector hands over, and whence the label app takes the answers back (webhook + catch-up over its API).
//
// - A Container Apps environment (Consumption workload profile) whose logs go to the loop's Log Analytics
//   workspace through Azure Monitor (a diagnostic setting): no workspace shared key in the template.
// - One container app running HumanSignal's official image, pinned; external HTTPS ingress only (the labelers'
//   browsers reach it; plain HTTP is redirected); always one replica (state is in PostgreSQL, never on the
//   replica's disk, but a cold start migrates and takes minutes, and a webhook is sent only while it runs).
// - Its own user-assigned identity, which reads its four secrets from Key Vault (Container Apps Key Vault
//   references: keyVaultUrl + identity); no secret value passes through this template.

@description('Container app name; its FQDN is <name>.<environment default domain>.')
param name string
param environmentName string
param location string
param tags object = {}

@description('HumanSignal\'s official image, pinned to a tested release (the loop was checked against 1.23.2).')
param image string = 'heartexlabs/label-studio:1.23.2'

@description('Resource id of Label Studio\'s user-assigned identity (Key Vault Secrets User on its secrets).')
param identityId string

@description('Log Analytics workspace the environment\'s logs go to.')
param logAnalyticsWorkspaceId string

@description('Versionless Key Vault secret URIs: secretKey, dbPassword, password, token (keyvault.bicep).')
param secretUris object

@description('The PostgreSQL server (postgres.bicep): host, database and login.')
param postgresHost string
param postgresDatabase string
param postgresUser string

@description('The loop\'s service user (an e-mail address): the first user, created at the first start; the function apps call the API as it.')
param username string

param cpu string = '1.0'
param memory string = '2Gi'
@minValue(1)
@description('Each replica runs the database migrations when it starts; raise with care.')
param maxReplicas int = 1

resource managedEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    // Keyless: Azure Monitor routes the logs (diagnostic setting below) instead of the workspace's shared key.
    appLogsConfiguration: { destination: 'azure-monitor' }
    workloadProfiles: [
      { name: 'Consumption', workloadProfileType: 'Consumption' }
    ]
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: managedEnvironment
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true } // ContainerAppConsoleLogs, ContainerAppSystemLogs
    ]
  }
}

// Its own address, known before the app exists: Container Apps names an app <name>.<default domain>.
var url = 'https://${name}.${managedEnvironment.properties.defaultDomain}'

// Container Apps secrets are Key Vault references resolved with the app's identity (versionless URIs follow
// rotation; a running revision picks a new value up on restart).
var secrets = [
  { name: 'secret-key', keyVaultUrl: secretUris.secretKey, identity: identityId }
  { name: 'db-password', keyVaultUrl: secretUris.dbPassword, identity: identityId }
  { name: 'user-password', keyVaultUrl: secretUris.password, identity: identityId }
  { name: 'user-token', keyVaultUrl: secretUris.token, identity: identityId }
]

// Label Studio reads X as LABEL_STUDIO_X, then HEARTEX_X, then bare X (core/utils/params.py get_env); the
// names below are the ones its settings (label_studio/core/settings/base.py, label_studio.py) and its start-up
// (server.py: the first user) read.
var env = [
  // Database: PostgreSQL (DJANGO_DB=default selects Label Studio's PostgreSQL settings), TLS through libpq.
  { name: 'DJANGO_DB', value: 'default' }
  { name: 'POSTGRE_NAME', value: postgresDatabase }
  { name: 'POSTGRE_USER', value: postgresUser }
  { name: 'POSTGRE_PASSWORD', secretRef: 'db-password' }
  { name: 'POSTGRE_HOST', value: postgresHost }
  { name: 'POSTGRE_PORT', value: '5432' }
  { name: 'PGSSLMODE', value: 'require' }
  // Signs sessions and tokens; given here, so that no replica generates its own into its (ephemeral) data dir.
  { name: 'SECRET_KEY', secretRef: 'secret-key' }
  // Its public address (links it builds) and the origin Django's CSRF check must trust: TLS ends at the
  // Container Apps ingress, so Django sees plain HTTP and would not match the browser's https:// origin.
  { name: 'LABEL_STUDIO_HOST', value: url }
  { name: 'CSRF_TRUSTED_ORIGINS', value: url }
  // Nobody signs up from the open internet: labelers join through the organisation's invite link.
  { name: 'LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK', value: 'true' }
  // The loop's service user, created (with this password and token) at the first start only.
  { name: 'LABEL_STUDIO_USERNAME', value: username }
  { name: 'LABEL_STUDIO_PASSWORD', secretRef: 'user-password' }
  { name: 'LABEL_STUDIO_USER_TOKEN', secretRef: 'user-token' }
  // Why legacy tokens: the deployment must know the apps' token before Label Studio runs (one Key Vault secret
  // is LABEL_STUDIO_USER_TOKEN and the apps' AL_LABEL_STUDIO_TOKEN); only a legacy token can be preset, and new
  // organisations disable them (`Authorization: Token` then answers 401) unless this is true at the first start.
  // (At most four comment lines in a row inside an array: Checkov's Bicep parser, pycep 0.5, fails on a fifth.)
  { name: 'LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN', value: 'true' }
  // Reporting off: Sentry (backend and browser) is on by default with HumanSignal's DSNs; usage analytics and
  // the version check call home.
  { name: 'SENTRY_DSN', value: '' }
  { name: 'FRONTEND_SENTRY_DSN', value: '' }
  { name: 'COLLECT_ANALYTICS', value: 'false' }
  { name: 'LATEST_VERSION_CHECK', value: 'false' }
  // The webhook to the label app is sent once, never retried, inside the labeler's own request, and waits
  // 1 s by default: too short for a function app's cold start (the label app's catch-up timer recovers
  // a lost one, later).
  { name: 'WEBHOOK_TIMEOUT', value: '10' }
]

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: union(tags, { 'al-role': 'label-studio' })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    environmentId: managedEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 8080
        transport: 'auto'
        allowInsecure: false // HTTPS only: plain HTTP is redirected
        traffic: [
          { latestRevision: true, weight: 100 }
        ]
      }
      secrets: secrets
    }
    template: {
      containers: [
        {
          // The image's default command (`label-studio`): migrations, the service user, then the server.
          name: 'label-studio'
          image: image
          resources: { cpu: json(cpu), memory: memory }
          env: env
          probes: [
            // A first start on an empty database runs every migration: give it up to ~6 minutes.
            {
              type: 'Startup'
              httpGet: { path: '/health', port: 8080 }
              initialDelaySeconds: 30
              periodSeconds: 30
              failureThreshold: 10
              timeoutSeconds: 5
            }
            {
              type: 'Liveness'
              httpGet: { path: '/health', port: 8080 }
              periodSeconds: 30
              failureThreshold: 3
              timeoutSeconds: 5
            }
            {
              type: 'Readiness'
              httpGet: { path: '/health', port: 8080 }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 5
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: maxReplicas
      }
    }
  }
  dependsOn: [environmentLogs]
}

output name string = app.name
output url string = 'https://${app.properties.configuration.ingress.fqdn}'
// Where its requests come from (a Consumption environment without its own virtual network; they may change):
// the label app lets them reach its annotation webhook (main.bicep).
output outboundIpAddresses array = contains(app.properties, 'outboundIpAddresses') ? app.properties.outboundIpAddresses : []
output environmentName string = managedEnvironment.name
